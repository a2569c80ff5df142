// FP32 3×3 depthwise convolution, one channel plane per call, with the bias and clamp (ReLU/ReLU6) fused.
//
// The plane is first copied into a zero-bordered scratch plane (padded width pw ≥ out_width + 2), so no tap needs a
// bounds check. Stride 1 then computes the plane as ONE flat loop over padded positions p = oy·pw + ox:
//   t[p] = bias + Σ w[ky][kx] · padded[p + ky·pw + kx]
// which is a long unit-stride loop the compiler vectorises fully even for 4- or 8-wide planes (a per-row loop
// would leave most lanes of a 16-float vector idle there); the two junk columns per row are skipped when the
// valid columns are copied out. Stride 2 runs per output row (the even/odd taps are interleaved loads).
//
// One portable body, instantiated twice: baseline (SSE2) and AVX2+FMA via a function target attribute, left to the
// auto-vectoriser; AVX-512 has its own intrinsics kernel (fp32_depthwise_avx512.c) on the same padded plane.
#include <string.h>

#include "qf_fp32.h"

static inline ptrdiff_t padded_width(ptrdiff_t width, ptrdiff_t pad_left, ptrdiff_t out_width, int stride) {
    ptrdiff_t needed = (out_width - 1) * stride + 3;
    return pad_left + width > needed ? pad_left + width : needed;
}

static inline ptrdiff_t padded_height(ptrdiff_t height, ptrdiff_t pad_top, ptrdiff_t out_height, int stride) {
    ptrdiff_t needed = (out_height - 1) * stride + 3;
    return pad_top + height > needed ? pad_top + height : needed;
}

size_t qf_fp32_depthwise3x3_scratch_size(ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
                                         ptrdiff_t out_height, ptrdiff_t out_width, int stride) {
    ptrdiff_t pw = padded_width(width, pad_left, out_width, stride);
    ptrdiff_t ph = padded_height(height, pad_top, out_height, stride);
    // Padded plane, then (stride 1) the flat result plane of out_height rows of pw; the slack lets vector kernels
    // read up to 34 floats past a row end (lanes that are never stored).
    return (size_t)(ph * pw + out_height * pw + 64);
}

// The zero-bordered copy of the plane: only the border is zeroed, the interior is copied over.
static void fill_padded(const float* input, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
                        ptrdiff_t pw, ptrdiff_t ph, float* padded) {
    memset(padded, 0, sizeof(float) * (size_t)(pad_top * pw));
    for (ptrdiff_t y = 0; y < height; ++y) {
        float* row = padded + (y + pad_top) * pw;
        for (ptrdiff_t x = 0; x < pad_left; ++x) row[x] = 0.0f;
        memcpy(row + pad_left, input + y * width, sizeof(float) * (size_t)width);
        for (ptrdiff_t x = pad_left + width; x < pw; ++x) row[x] = 0.0f;
    }
    memset(padded + (pad_top + height) * pw, 0, sizeof(float) * (size_t)((ph - pad_top - height) * pw));
}

static inline __attribute__((always_inline)) void depthwise_body(
    const float* restrict input, ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top, ptrdiff_t pad_left,
    ptrdiff_t out_height, ptrdiff_t out_width, const float* restrict weights, float bias, float minimum, float maximum,
    float* restrict output, float* restrict scratch) {
    const ptrdiff_t pw = padded_width(width, pad_left, out_width, stride);
    const ptrdiff_t ph = padded_height(height, pad_top, out_height, stride);
    float* restrict padded = scratch;
    fill_padded(input, height, width, pad_top, pad_left, pw, ph, padded);
    const float w0 = weights[0], w1 = weights[1], w2 = weights[2];
    const float w3 = weights[3], w4 = weights[4], w5 = weights[5];
    const float w6 = weights[6], w7 = weights[7], w8 = weights[8];
    if (stride == 1) {
        float* restrict flat = scratch + ph * pw;
        const ptrdiff_t count = (out_height - 1) * pw + out_width;
        const float* restrict r0 = padded;
        const float* restrict r1 = padded + pw;
        const float* restrict r2 = padded + 2 * pw;
        for (ptrdiff_t p = 0; p < count; ++p) {
            float sum = bias + w0 * r0[p] + w1 * r0[p + 1] + w2 * r0[p + 2]
                      + w3 * r1[p] + w4 * r1[p + 1] + w5 * r1[p + 2]
                      + w6 * r2[p] + w7 * r2[p + 1] + w8 * r2[p + 2];
            sum = sum < minimum ? minimum : sum;
            flat[p] = sum > maximum ? maximum : sum;
        }
        for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
            memcpy(output + oy * out_width, flat + oy * pw, sizeof(float) * (size_t)out_width);
        }
        return;
    }
    for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
        const float* restrict r0 = padded + oy * stride * pw;
        const float* restrict r1 = r0 + pw;
        const float* restrict r2 = r1 + pw;
        float* restrict row = output + oy * out_width;
        for (ptrdiff_t ox = 0; ox < out_width; ++ox) {
            const ptrdiff_t x = ox * stride;
            float sum = bias + w0 * r0[x] + w1 * r0[x + 1] + w2 * r0[x + 2]
                      + w3 * r1[x] + w4 * r1[x + 1] + w5 * r1[x + 2]
                      + w6 * r2[x] + w7 * r2[x + 1] + w8 * r2[x + 2];
            sum = sum < minimum ? minimum : sum;
            row[ox] = sum > maximum ? maximum : sum;
        }
    }
}

#define QF_DEPTHWISE_PARAMETERS                                                                                 \
    const float* input, ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top, ptrdiff_t pad_left,   \
        ptrdiff_t out_height, ptrdiff_t out_width, const float* weights, float bias, float minimum, float maximum,  \
        float* output, float* scratch
#define QF_DEPTHWISE_ARGUMENTS                                                                                  \
    input, height, width, stride, pad_top, pad_left, out_height, out_width, weights, bias, minimum, maximum, output, \
        scratch

static void depthwise_portable(QF_DEPTHWISE_PARAMETERS) { depthwise_body(QF_DEPTHWISE_ARGUMENTS); }

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) static void depthwise_avx2(QF_DEPTHWISE_PARAMETERS) {
    depthwise_body(QF_DEPTHWISE_ARGUMENTS);
}
#endif

void qf_fp32_depthwise3x3(int isa, const float* input, ptrdiff_t height, ptrdiff_t width, int stride,
                          ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                          const float* weights, float bias, float minimum, float maximum, int clamp,
                          float* output, float* scratch) {
    if (out_height <= 0 || out_width <= 0) return;
    if (!clamp) {
        minimum = -__builtin_inff();
        maximum = __builtin_inff();
    }
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        if (qf_fp32_depthwise3x3_direct_avx512(input, height, width, stride, pad_top, pad_left, out_height, out_width,
                                               weights, bias, minimum, maximum, output)) {
            return;
        }
        const ptrdiff_t pw = padded_width(width, pad_left, out_width, stride);
        const ptrdiff_t ph = padded_height(height, pad_top, out_height, stride);
        fill_padded(input, height, width, pad_top, pad_left, pw, ph, scratch);
        qf_fp32_depthwise3x3_padded_avx512(scratch, pw, stride, out_height, out_width, weights, bias, minimum, maximum,
                                           output, scratch + ph * pw);
        return;
    }
    if (isa == QF_FP32_ISA_AVX2) {
        depthwise_avx2(QF_DEPTHWISE_ARGUMENTS);
        return;
    }
#endif
    (void)isa;
    depthwise_portable(QF_DEPTHWISE_ARGUMENTS);
}

void qf_fp32_depthwise3x3_planes(int isa, const float* input, ptrdiff_t first_plane, ptrdiff_t plane_count,
                                 ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                 ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width, const float* weights,
                                 const float* bias, float minimum, float maximum, int clamp, float* output,
                                 float* scratch) {
    if (!clamp) {
        minimum = -__builtin_inff();
        maximum = __builtin_inff();
    }
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512 &&
        qf_fp32_depthwise3x3_planes_avx512(input, first_plane, plane_count, channels, height, width, stride, pad_top,
                                           pad_left, out_height, out_width, weights, bias, minimum, maximum, output)) {
        return;
    }
#endif
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        const ptrdiff_t channel = plane % channels;
        qf_fp32_depthwise3x3(isa, input + plane * height * width, height, width, stride, pad_top, pad_left, out_height,
                             out_width, weights + 9 * channel, bias[channel], minimum, maximum, clamp,
                             output + plane * out_height * out_width, scratch);
    }
}
