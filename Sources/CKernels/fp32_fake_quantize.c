// FP32 fake quantization for quantization-aware training: y = (clamp(round(x / s) + z, qmin, qmax) − z) · s, its
// straight-through gradient mask, and a min/max reduction for range observers.
//
// Rounding must be exactly round-half-to-even of x / s (what AffineQuantization.quantize and the float executor's
// QuantizeLinear do), so the values trained on are the values the exported QDQ graph computes. The body first
// clamps x / s into [qmin − z − 1, qmax − z + 1] (saturation does not change the result, and the bounds are small),
// then rounds with the 1.5·2^23 trick, exact for |v| < 2^22 in the default round-to-nearest-even mode; the
// compiler vectorises it on every ISA (no libm call). The file must not be compiled with -ffast-math.
//
// One portable body, instantiated for the baseline, AVX2 and AVX-512 via function target attributes.
#include "qf_fp32.h"

#define QF_ROUNDING_MAGIC 12582912.0f  // 1.5 · 2^23

static inline __attribute__((always_inline)) float clamp_float(float v, float low, float high) {
    v = v < low ? low : v;
    return v > high ? high : v;
}

// round(x / s) as a float, exact: see the file comment.
static inline __attribute__((always_inline)) float rounded_quotient(float x, float scale, float low, float high) {
    float v = clamp_float(x / scale, low, high);
    return (v + QF_ROUNDING_MAGIC) - QF_ROUNDING_MAGIC;
}

static inline __attribute__((always_inline)) void fake_quantize_body(const float* restrict x, float* restrict y, ptrdiff_t n,
                                                                      float scale, float zero_point, float qmin, float qmax) {
    const float low = qmin - zero_point - 1.0f, high = qmax - zero_point + 1.0f;
    for (ptrdiff_t i = 0; i < n; ++i) {
        float q = clamp_float(rounded_quotient(x[i], scale, low, high) + zero_point, qmin, qmax);
        y[i] = (q - zero_point) * scale;
    }
}

// ONNX QuantizeLinear as the float executor defines it (NaN → the zero point), then DequantizeLinear when
// `dequantize`: the same rounding as fake_quantize_body, plus the NaN select (which QAT's kernel must not have:
// there a NaN has to reach the loss, where divergence is detected).
static inline __attribute__((always_inline)) void quantize_linear_body(const float* restrict x, float* restrict y,
                                                                        ptrdiff_t n, float scale, float zero_point,
                                                                        float qmin, float qmax, int dequantize) {
    const float low = qmin - zero_point - 1.0f, high = qmax - zero_point + 1.0f;
    for (ptrdiff_t i = 0; i < n; ++i) {
        const float v = x[i];
        float q = clamp_float(rounded_quotient(v, scale, low, high) + zero_point, qmin, qmax);
        q = v != v ? zero_point : q;
        y[i] = dequantize ? (q - zero_point) * scale : q;
    }
}

static inline __attribute__((always_inline)) void mask_gradient_body(const float* restrict x, const float* restrict dy,
                                                                      float* restrict dx, ptrdiff_t n, float scale,
                                                                      float zero_point, float qmin, float qmax, int accumulate) {
    const float low = qmin - zero_point - 1.0f, high = qmax - zero_point + 1.0f;
    for (ptrdiff_t i = 0; i < n; ++i) {
        float q = rounded_quotient(x[i], scale, low, high) + zero_point;
        float g = (q < qmin || q > qmax) ? 0.0f : dy[i];
        dx[i] = accumulate ? dx[i] + g : g;
    }
}

static inline __attribute__((always_inline)) void min_max_body(const float* restrict x, ptrdiff_t n, float* low, float* high) {
    // 16 independent lanes so the loop vectorises without reassociating a single running min/max.
    float lows[16], highs[16];
    for (int lane = 0; lane < 16; ++lane) { lows[lane] = __builtin_inff(); highs[lane] = -__builtin_inff(); }
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int lane = 0; lane < 16; ++lane) {
            float v = x[i + lane];
            lows[lane] = v < lows[lane] ? v : lows[lane];
            highs[lane] = v > highs[lane] ? v : highs[lane];
        }
    }
    float l = __builtin_inff(), h = -__builtin_inff();
    for (int lane = 0; lane < 16; ++lane) { l = lows[lane] < l ? lows[lane] : l; h = highs[lane] > h ? highs[lane] : h; }
    for (; i < n; ++i) { l = x[i] < l ? x[i] : l; h = x[i] > h ? x[i] : h; }
    *low = l;
    *high = h;
}

#define QF_INSTANTIATE(suffix, attributes)                                                                             \
    attributes static void fake_quantize_##suffix(const float* x, float* y, ptrdiff_t n, float s, float z, float lo,  \
                                                  float hi) {                                                          \
        fake_quantize_body(x, y, n, s, z, lo, hi);                                                                     \
    }                                                                                                                  \
    attributes static void mask_gradient_##suffix(const float* x, const float* dy, float* dx, ptrdiff_t n, float s,   \
                                                  float z, float lo, float hi, int accumulate) {                       \
        mask_gradient_body(x, dy, dx, n, s, z, lo, hi, accumulate);                                                    \
    }                                                                                                                  \
    attributes static void min_max_##suffix(const float* x, ptrdiff_t n, float* lo, float* hi) { min_max_body(x, n, lo, hi); } \
    attributes static void quantize_linear_##suffix(const float* x, float* y, ptrdiff_t n, float s, float z, float lo,  \
                                                    float hi, int dequantize) {                                        \
        if (dequantize) quantize_linear_body(x, y, n, s, z, lo, hi, 1);                                                \
        else quantize_linear_body(x, y, n, s, z, lo, hi, 0);                                                           \
    }

QF_INSTANTIATE(portable, )
QF_INSTANTIATE(avx2, __attribute__((target("avx2,fma"))))
QF_INSTANTIATE(avx512, __attribute__((target("avx512f,fma"))))

void qf_fp32_fake_quantize(int isa, const float* x, float* y, ptrdiff_t n, float scale, float zero_point, float qmin,
                           float qmax) {
    switch (isa) {
    case QF_FP32_ISA_AVX512: fake_quantize_avx512(x, y, n, scale, zero_point, qmin, qmax); break;
    case QF_FP32_ISA_AVX2: fake_quantize_avx2(x, y, n, scale, zero_point, qmin, qmax); break;
    default: fake_quantize_portable(x, y, n, scale, zero_point, qmin, qmax); break;
    }
}

void qf_fp32_fake_quantize_mask_gradient(int isa, const float* x, const float* dy, float* dx, ptrdiff_t n, float scale,
                                         float zero_point, float qmin, float qmax, int accumulate) {
    switch (isa) {
    case QF_FP32_ISA_AVX512: mask_gradient_avx512(x, dy, dx, n, scale, zero_point, qmin, qmax, accumulate); break;
    case QF_FP32_ISA_AVX2: mask_gradient_avx2(x, dy, dx, n, scale, zero_point, qmin, qmax, accumulate); break;
    default: mask_gradient_portable(x, dy, dx, n, scale, zero_point, qmin, qmax, accumulate); break;
    }
}

void qf_fp32_min_max(int isa, const float* x, ptrdiff_t n, float* low, float* high) {
    switch (isa) {
    case QF_FP32_ISA_AVX512: min_max_avx512(x, n, low, high); break;
    case QF_FP32_ISA_AVX2: min_max_avx2(x, n, low, high); break;
    default: min_max_portable(x, n, low, high); break;
    }
}

void qf_fp32_quantize_linear(int isa, const float* x, float* y, ptrdiff_t n, float scale, float zero_point, float qmin,
                             float qmax, int dequantize) {
    switch (isa) {
    case QF_FP32_ISA_AVX512: quantize_linear_avx512(x, y, n, scale, zero_point, qmin, qmax, dequantize); break;
    case QF_FP32_ISA_AVX2: quantize_linear_avx2(x, y, n, scale, zero_point, qmin, qmax, dequantize); break;
    default: quantize_linear_portable(x, y, n, scale, zero_point, qmin, qmax, dequantize); break;
    }
}
