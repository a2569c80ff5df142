// FP32 BatchNorm passes for training (Sources/Training/Operations/BatchNormalization.swift), over ranges of the
// planes of an NCHW tensor: the statistics of x, the affine map with an optional fused clamp (ReLU/ReLU6), and the
// two backward passes (per-channel sums of the gradient, then the input gradient).
//
// These passes were Swift SIMD16 loops, which the baseline build compiles to SSE2 (4 lanes, no FMA, compare and
// blend as and/andnot/or). From memory that does not matter (one core streams ~28 GB/s either way), but the many
// BN tensors that are still in cache when BN reads them (most layers past the 32×32 stage) ran 2–3× slower than
// AVX-512 code does. One portable body per pass, instantiated for the baseline, AVX2 and AVX-512 via function target
// attributes (as fp32_fake_quantize.c).
//
// Arithmetic is the old Swift code's: 16 lanes per step, one accumulator per lane, lanes added as a tree
// (lanes j and j + 8, then j and j + 4, …), a scalar tail, and no fused multiply-add (FP_CONTRACT OFF), so all ISAs
// compute the same elementwise results and the forward clamp and the backward mask always agree. Per-plane sums are
// float; the caller's per-channel totals are double.
#include "qf_fp32.h"

#pragma STDC FP_CONTRACT OFF
// The 16-lane helpers below are always inlined into functions that have the ISA's target attribute, so no vector
// value crosses a call boundary and the ABI note Clang gives for the baseline instantiation does not apply.
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpsabi"
#endif

// 16 lanes as GCC/Clang vector types (one zmm on AVX-512, two ymm on AVX2, four xmm on the baseline): the
// reductions keep one accumulator per lane, which the vectoriser would not do for a plain loop.
typedef float qf_lanes __attribute__((vector_size(64)));
typedef int qf_lane_mask __attribute__((vector_size(64)));

static inline __attribute__((always_inline)) qf_lanes load_lanes(const float* p) {
    qf_lanes v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

// Σ of the 16 lanes as a tree (the order of VectorMath.horizontalSum: lanes j and j + 8, then j and j + 4, …).
static inline __attribute__((always_inline)) float lane_sum(qf_lanes v) {
    typedef float half __attribute__((vector_size(32)));
    typedef float quarter __attribute__((vector_size(16)));
    const half eight = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                       __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    const quarter four = __builtin_shufflevector(eight, eight, 0, 1, 2, 3) + __builtin_shufflevector(eight, eight, 4, 5, 6, 7);
    return (four[0] + four[2]) + (four[1] + four[3]);
}

// The fused clamp's gradient mask (the rule of the unfused clamp's backward: zero where the output sits at or
// beyond a bound, NaN passes).
static inline __attribute__((always_inline)) float masked(float dy, float x, float scale, float offset, float minimum,
                                                          float maximum) {
    const float u = x * scale + offset;
    return (u <= minimum || u >= maximum) ? 0.0f : dy;
}

static inline __attribute__((always_inline)) qf_lanes masked_lanes(qf_lanes dy, qf_lanes x, float scale, float offset,
                                                                    float minimum, float maximum) {
    const qf_lanes u = x * scale + offset;
    const qf_lane_mask outside = (u <= minimum) | (u >= maximum);
    return (qf_lanes)((qf_lane_mask)dy & ~outside);
}

static inline __attribute__((always_inline)) void statistics_body(const float* restrict x, ptrdiff_t first,
                                                                   ptrdiff_t count, ptrdiff_t channels, ptrdiff_t size,
                                                                   const float* restrict shift, double* restrict sum,
                                                                   double* restrict squares) {
    ptrdiff_t c = first % channels;
    for (ptrdiff_t p = first; p < first + count; ++p) {
        const float* restrict plane = x + p * size;
        const float s = shift[c];
        qf_lanes sums = {0}, squared = {0};
        ptrdiff_t i = 0;
        for (; i + 16 <= size; i += 16) {
            const qf_lanes d = load_lanes(plane + i) - s;
            sums += d;
            squared += d * d;
        }
        float total = lane_sum(sums), total_squares = lane_sum(squared);
        for (; i < size; ++i) {
            const float d = plane[i] - s;
            total += d;
            total_squares += d * d;
        }
        sum[c] += total;
        squares[c] += total_squares;
        if (++c == channels) c = 0;
    }
}

static inline __attribute__((always_inline)) void apply_body(const float* restrict x, ptrdiff_t first, ptrdiff_t count,
                                                              ptrdiff_t channels, ptrdiff_t size,
                                                              const float* restrict scale, const float* restrict offset,
                                                              float minimum, float maximum, const int clamp,
                                                              float* restrict y, ptrdiff_t y_first) {
    ptrdiff_t c = first % channels;
    for (ptrdiff_t p = first; p < first + count; ++p) {
        const float* restrict from = x + p * size;
        float* restrict to = y + (p - y_first) * size;
        const float a = scale[c], b = offset[c];
        for (ptrdiff_t i = 0; i < size; ++i) {
            float v = from[i] * a + b;
            if (clamp) {
                // NaN passes (comparisons with NaN are false).
                v = v < minimum ? minimum : v;
                v = v > maximum ? maximum : v;
            }
            to[i] = v;
        }
        if (++c == channels) c = 0;
    }
}

static inline __attribute__((always_inline)) void gradient_sums_body(
    const float* restrict dy, const float* restrict x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
    ptrdiff_t size, const float* restrict scale, const float* restrict offset, float minimum, float maximum,
    const int clamp, double* restrict sum, double* restrict dot) {
    ptrdiff_t c = first % channels;
    for (ptrdiff_t p = first; p < first + count; ++p) {
        const float* restrict g = dy + p * size;
        const float* restrict v = x + p * size;
        const float a = scale[c], b = offset[c];
        qf_lanes sums = {0}, dots = {0};
        ptrdiff_t i = 0;
        for (; i + 16 <= size; i += 16) {
            const qf_lanes xv = load_lanes(v + i);
            const qf_lanes d = clamp ? masked_lanes(load_lanes(g + i), xv, a, b, minimum, maximum) : load_lanes(g + i);
            sums += d;
            dots += d * xv;
        }
        float total = lane_sum(sums), product = lane_sum(dots);
        for (; i < size; ++i) {
            const float d = clamp ? masked(g[i], v[i], a, b, minimum, maximum) : g[i];
            total += d;
            product += d * v[i];
        }
        sum[c] += total;
        dot[c] += product;
        if (++c == channels) c = 0;
    }
}

static inline __attribute__((always_inline)) void input_gradient_body(
    const float* restrict dy, const float* restrict x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
    ptrdiff_t size, const float* restrict scale, const float* restrict offset, float minimum, float maximum,
    const int clamp, const float* restrict gain, const float* restrict slope, const float* restrict constant,
    const int accumulate, float* restrict dx, ptrdiff_t dx_first) {
    ptrdiff_t c = first % channels;
    for (ptrdiff_t p = first; p < first + count; ++p) {
        const float* restrict g = dy + p * size;
        const float* restrict v = x + p * size;
        float* restrict out = dx + (p - dx_first) * size;
        const float a = scale[c], b = offset[c], k = gain[c], s = slope[c], e = constant[c];
        for (ptrdiff_t i = 0; i < size; ++i) {
            const float d = clamp ? masked(g[i], v[i], a, b, minimum, maximum) : g[i];
            const float value = d * k + v[i] * s + e;
            out[i] = accumulate ? out[i] + value : value;
        }
        if (++c == channels) c = 0;
    }
}

#define QF_PLANES const float *x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels, ptrdiff_t size
#define QF_MASK const float *scale, const float *offset, float minimum, float maximum
#define QF_INSTANTIATE(suffix, attributes)                                                                             \
    attributes static void statistics_##suffix(QF_PLANES, const float* shift, double* sum, double* squares) {           \
        statistics_body(x, first, count, channels, size, shift, sum, squares);                                         \
    }                                                                                                                  \
    attributes static void apply_##suffix(QF_PLANES, QF_MASK, int clamp, float* y, ptrdiff_t y_first) {                \
        if (clamp) apply_body(x, first, count, channels, size, scale, offset, minimum, maximum, 1, y, y_first);        \
        else apply_body(x, first, count, channels, size, scale, offset, minimum, maximum, 0, y, y_first);              \
    }                                                                                                                  \
    attributes static void gradient_sums_##suffix(const float* dy, QF_PLANES, QF_MASK, int clamp, double* sum,         \
                                                  double* dot) {                                                       \
        if (clamp) gradient_sums_body(dy, x, first, count, channels, size, scale, offset, minimum, maximum, 1, sum, dot); \
        else gradient_sums_body(dy, x, first, count, channels, size, scale, offset, minimum, maximum, 0, sum, dot);   \
    }                                                                                                                  \
    attributes static void input_gradient_##suffix(const float* dy, QF_PLANES, QF_MASK, int clamp, const float* gain,  \
                                                   const float* slope, const float* constant, int accumulate,          \
                                                   float* dx, ptrdiff_t dx_first) {                                                        \
        if (clamp && accumulate)                                                                                       \
            input_gradient_body(dy, x, first, count, channels, size, scale, offset, minimum, maximum, 1, gain, slope, \
                                constant, 1, dx, dx_first);                                                                      \
        else if (clamp)                                                                                                \
            input_gradient_body(dy, x, first, count, channels, size, scale, offset, minimum, maximum, 1, gain, slope, \
                                constant, 0, dx, dx_first);                                                                      \
        else if (accumulate)                                                                                           \
            input_gradient_body(dy, x, first, count, channels, size, scale, offset, minimum, maximum, 0, gain, slope, \
                                constant, 1, dx, dx_first);                                                                      \
        else                                                                                                           \
            input_gradient_body(dy, x, first, count, channels, size, scale, offset, minimum, maximum, 0, gain, slope, \
                                constant, 0, dx, dx_first);                                                                      \
    }

QF_INSTANTIATE(portable, )
#if defined(__x86_64__) || defined(__i386__)
QF_INSTANTIATE(avx2, __attribute__((target("avx2,fma"))))
QF_INSTANTIATE(avx512, __attribute__((target("avx512f,fma"))))
#endif

void qf_fp32_batchnorm_statistics(int isa, const float* x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                                  ptrdiff_t size, const float* shift, double* sum, double* squares) {
    if (count <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) { statistics_avx512(x, first, count, channels, size, shift, sum, squares); return; }
    if (isa == QF_FP32_ISA_AVX2) { statistics_avx2(x, first, count, channels, size, shift, sum, squares); return; }
#endif
    (void)isa;
    statistics_portable(x, first, count, channels, size, shift, sum, squares);
}

void qf_fp32_batchnorm_apply(int isa, const float* x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                             ptrdiff_t size, const float* scale, const float* offset, float minimum, float maximum,
                             int clamp, float* y) {
    if (count <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) { apply_avx512(x, first, count, channels, size, scale, offset, minimum, maximum, clamp, y, 0); return; }
    if (isa == QF_FP32_ISA_AVX2) { apply_avx2(x, first, count, channels, size, scale, offset, minimum, maximum, clamp, y, 0); return; }
#endif
    (void)isa;
    apply_portable(x, first, count, channels, size, scale, offset, minimum, maximum, clamp, y, 0);
}

void qf_fp32_channel_affine_planes(int isa, const float* x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                                   ptrdiff_t size, const qf_fp32_channel_affine* a, float* y) {
    if (count <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        apply_avx512(x, first, count, channels, size, a->scale, a->offset, a->minimum, a->maximum, a->clamp, y, first);
        return;
    }
    if (isa == QF_FP32_ISA_AVX2) {
        apply_avx2(x, first, count, channels, size, a->scale, a->offset, a->minimum, a->maximum, a->clamp, y, first);
        return;
    }
#endif
    (void)isa;
    apply_portable(x, first, count, channels, size, a->scale, a->offset, a->minimum, a->maximum, a->clamp, y, first);
}

void qf_fp32_batchnorm_gradient_sums(int isa, const float* dy, const float* x, ptrdiff_t first, ptrdiff_t count,
                                     ptrdiff_t channels, ptrdiff_t size, const float* scale, const float* offset,
                                     float minimum, float maximum, int clamp, double* sum, double* dot) {
    if (count <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        gradient_sums_avx512(dy, x, first, count, channels, size, scale, offset, minimum, maximum, clamp, sum, dot);
        return;
    }
    if (isa == QF_FP32_ISA_AVX2) {
        gradient_sums_avx2(dy, x, first, count, channels, size, scale, offset, minimum, maximum, clamp, sum, dot);
        return;
    }
#endif
    (void)isa;
    gradient_sums_portable(dy, x, first, count, channels, size, scale, offset, minimum, maximum, clamp, sum, dot);
}

void qf_fp32_batchnorm_input_gradient(int isa, const float* dy, const float* x, ptrdiff_t first, ptrdiff_t count,
                                      ptrdiff_t channels, ptrdiff_t size, const float* scale, const float* offset,
                                      float minimum, float maximum, int clamp, const float* gain, const float* slope,
                                      const float* constant, int accumulate, float* dx) {
    if (count <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        input_gradient_avx512(dy, x, first, count, channels, size, scale, offset, minimum, maximum, clamp, gain, slope,
                              constant, accumulate, dx, 0);
        return;
    }
    if (isa == QF_FP32_ISA_AVX2) {
        input_gradient_avx2(dy, x, first, count, channels, size, scale, offset, minimum, maximum, clamp, gain, slope,
                            constant, accumulate, dx, 0);
        return;
    }
#endif
    (void)isa;
    input_gradient_portable(dy, x, first, count, channels, size, scale, offset, minimum, maximum, clamp, gain, slope,
                            constant, accumulate, dx, 0);
}

void qf_fp32_gradient_affine_planes(int isa, const float* dy, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                                    ptrdiff_t size, const qf_fp32_gradient_affine* a, float* dx) {
    if (count <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        input_gradient_avx512(dy, a->input, first, count, channels, size, a->scale, a->offset, a->minimum, a->maximum,
                              a->clamp, a->gain, a->slope, a->constant, 0, dx, first);
        return;
    }
    if (isa == QF_FP32_ISA_AVX2) {
        input_gradient_avx2(dy, a->input, first, count, channels, size, a->scale, a->offset, a->minimum, a->maximum,
                            a->clamp, a->gain, a->slope, a->constant, 0, dx, first);
        return;
    }
#endif
    (void)isa;
    input_gradient_portable(dy, a->input, first, count, channels, size, a->scale, a->offset, a->minimum, a->maximum,
                            a->clamp, a->gain, a->slope, a->constant, 0, dx, first);
}
