// Backward of the FP32 3×3 depthwise convolution (stride 1 or 2): weight gradient and input gradient of whole
// planes, for the training engine.
//
// Stride-1 input gradient: dX[y][x] = Σ w[ky][kx] · dY[y + pad_top − ky][x + pad_left − kx] is the forward
// convolution of dY with the kernel rotated by 180° and padding 2 − pad (top/left), so it runs the forward kernels
// (qf_fp32_depthwise3x3_planes: on AVX-512 the direct masked-load kernels) instead of a kernel of its own.
// Stride-2 input gradient and the weight gradient: AVX-512 kernels in fp32_depthwise_backward_avx512.c, else the
// portable bodies below (one body, instantiated for the baseline and AVX2+FMA via target attributes and left to the
// auto-vectoriser; the weight gradient's sums use 16 explicit lanes because float reductions are not reassociated).
//
// Planes are processed in chunks of about QF_CHUNK_FLOATS floats: the weight gradient, then the input gradient of
// the same chunk, which finds dY still in L2 — dY is read from memory once for both gradients.
#include <string.h>

#include "qf_fp32.h"
#include "fp32_depthwise_padding.h"

#define QF_CHUNK_FLOATS 16384

// First o ≥ 0 with 0 ≤ o·stride + offset, and one past the last with o·stride + offset < limit (capped at count).
static inline ptrdiff_t first_inside(ptrdiff_t offset, int stride) {
    return offset >= 0 ? 0 : (-offset + stride - 1) / stride;
}
static inline ptrdiff_t end_inside(ptrdiff_t offset, int stride, ptrdiff_t limit, ptrdiff_t count) {
    if (limit - 1 - offset < 0) return 0;
    const ptrdiff_t end = (limit - 1 - offset) / stride + 1;
    return end < count ? end : count;
}

// weight_gradient[ky·3 + kx] += Σ dY[oy][ox] · padded[oy·stride + ky][ox·stride + kx] of one plane (zero-bordered
// copy, rows of pw floats): one pass over dY, nine 8-lane accumulators.
static inline __attribute__((always_inline)) void weight_gradient_plane(const float* restrict padded, ptrdiff_t pw,
                                                                         const int stride, const float* restrict dy,
                                                                         ptrdiff_t out_height, ptrdiff_t out_width,
                                                                         float* restrict weight_gradient) {
    float lanes[9][8] = {{0}}, tail[9] = {0};
    for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
        const float* restrict r0 = padded + oy * stride * pw;
        const float* restrict r1 = r0 + pw;
        const float* restrict r2 = r1 + pw;
        const float* restrict d = dy + oy * out_width;
        ptrdiff_t ox = 0;
        for (; ox + 8 <= out_width; ox += 8) {
            for (int lane = 0; lane < 8; ++lane) {
                const float v = d[ox + lane];
                const ptrdiff_t x = (ox + lane) * stride;
                lanes[0][lane] += v * r0[x], lanes[1][lane] += v * r0[x + 1], lanes[2][lane] += v * r0[x + 2];
                lanes[3][lane] += v * r1[x], lanes[4][lane] += v * r1[x + 1], lanes[5][lane] += v * r1[x + 2];
                lanes[6][lane] += v * r2[x], lanes[7][lane] += v * r2[x + 1], lanes[8][lane] += v * r2[x + 2];
            }
        }
        for (; ox < out_width; ++ox) {
            const float v = d[ox];
            const ptrdiff_t x = ox * stride;
            tail[0] += v * r0[x], tail[1] += v * r0[x + 1], tail[2] += v * r0[x + 2];
            tail[3] += v * r1[x], tail[4] += v * r1[x + 1], tail[5] += v * r1[x + 2];
            tail[6] += v * r2[x], tail[7] += v * r2[x + 1], tail[8] += v * r2[x + 2];
        }
    }
    for (int tap = 0; tap < 9; ++tap) {
        float sum = tail[tap];
        for (int lane = 0; lane < 8; ++lane) sum += lanes[tap][lane];
        weight_gradient[tap] += sum;
    }
}

// Stride-2 input gradient of one plane, row by row: each input row y takes the kernel rows ky with y + pad_top − ky
// even, i.e. dY row (y + pad_top − ky)/2; within it, input column 2·ox + kx − pad_left gets w[ky][kx]·dY[ox].
static inline __attribute__((always_inline)) void input_gradient_stride2_plane(
    const float* restrict dy, const float* restrict weights, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top,
    ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width, float* restrict dx, int accumulate) {
    for (ptrdiff_t y = 0; y < height; ++y) {
        float* restrict row = dx + y * width;
        if (!accumulate) memset(row, 0, sizeof(float) * (size_t)width);
        for (int ky = 0; ky < 3; ++ky) {
            const ptrdiff_t q = y + pad_top - ky;
            if (q < 0 || q % 2 != 0 || q / 2 >= out_height) continue;
            const float* restrict d = dy + (q / 2) * out_width;
            for (int kx = 0; kx < 3; ++kx) {
                const float w = weights[3 * ky + kx];
                const ptrdiff_t shift = kx - pad_left;
                const ptrdiff_t ox_end = end_inside(shift, 2, width, out_width);
                for (ptrdiff_t ox = first_inside(shift, 2); ox < ox_end; ++ox) row[2 * ox + shift] += w * d[ox];
            }
        }
    }
}

#define QF_BACKWARD_PARAMETERS                                                                                       \
    const float *input, const float *dy, const float *weights, ptrdiff_t first_plane, ptrdiff_t plane_count,          \
        ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top, ptrdiff_t pad_left,      \
        ptrdiff_t out_height, ptrdiff_t out_width, float *weight_gradient, float *dx, int accumulate

// `padded` is scratch for the zero-bordered plane (qf_fp32_depthwise3x3_scratch_size of the forward geometry).
static inline __attribute__((always_inline)) void weight_gradient_body(QF_BACKWARD_PARAMETERS, float* padded) {
    (void)weights, (void)dx, (void)accumulate;
    const ptrdiff_t pw = padded_width(width, pad_left, out_width, stride);
    const ptrdiff_t ph = padded_height(height, pad_top, out_height, stride);
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        fill_padded(input + plane * height * width, height, width, pad_top, pad_left, pw, ph, padded);
        const float* d = dy + plane * out_height * out_width;
        float* dw = weight_gradient + 9 * (plane % channels);
        // A literal stride, so the lane loop has a constant step.
        if (stride == 1) {
            weight_gradient_plane(padded, pw, 1, d, out_height, out_width, dw);
        } else {
            weight_gradient_plane(padded, pw, 2, d, out_height, out_width, dw);
        }
    }
}

static inline __attribute__((always_inline)) void input_gradient_stride2_body(QF_BACKWARD_PARAMETERS) {
    (void)input, (void)stride, (void)weight_gradient;
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        input_gradient_stride2_plane(dy + plane * out_height * out_width, weights + 9 * (plane % channels), height,
                                     width, pad_top, pad_left, out_height, out_width, dx + plane * height * width,
                                     accumulate);
    }
}

#define QF_BACKWARD_ARGUMENTS                                                                                         \
    input, dy, weights, first_plane, plane_count, channels, height, width, stride, pad_top, pad_left, out_height,     \
        out_width, weight_gradient, dx, accumulate

static void weight_gradient_portable(QF_BACKWARD_PARAMETERS, float* padded) {
    weight_gradient_body(QF_BACKWARD_ARGUMENTS, padded);
}
static void input_gradient_stride2_portable(QF_BACKWARD_PARAMETERS) { input_gradient_stride2_body(QF_BACKWARD_ARGUMENTS); }

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) static void weight_gradient_avx2(QF_BACKWARD_PARAMETERS, float* padded) {
    weight_gradient_body(QF_BACKWARD_ARGUMENTS, padded);
}
__attribute__((target("avx2,fma"))) static void input_gradient_stride2_avx2(QF_BACKWARD_PARAMETERS) {
    input_gradient_stride2_body(QF_BACKWARD_ARGUMENTS);
}
#endif

// The portable bodies for `isa` (AVX2 on an AVX-512 CPU when the AVX-512 kernel declined the geometry).
static void weight_gradient_fallback(int isa, QF_BACKWARD_PARAMETERS, float* padded) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa >= QF_FP32_ISA_AVX2) {
        weight_gradient_avx2(QF_BACKWARD_ARGUMENTS, padded);
        return;
    }
#endif
    (void)isa;
    weight_gradient_portable(QF_BACKWARD_ARGUMENTS, padded);
}

static void input_gradient_stride2(int isa, QF_BACKWARD_PARAMETERS) {
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512 &&
        qf_fp32_depthwise3x3_input_gradient_stride2_avx512(dy, weights, first_plane, plane_count, channels, height,
                                                           width, pad_top, pad_left, out_height, out_width, dx,
                                                           accumulate)) {
        return;
    }
    if (isa >= QF_FP32_ISA_AVX2) {
        input_gradient_stride2_avx2(QF_BACKWARD_ARGUMENTS);
        return;
    }
#endif
    (void)isa;
    input_gradient_stride2_portable(QF_BACKWARD_ARGUMENTS);
}

static ptrdiff_t chunk_planes(ptrdiff_t height, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width) {
    const ptrdiff_t in_plane = height * width, out_plane = out_height * out_width;
    const ptrdiff_t largest = in_plane > out_plane ? in_plane : out_plane;
    return largest >= QF_CHUNK_FLOATS ? 1 : QF_CHUNK_FLOATS / (largest > 0 ? largest : 1);
}

// Plane scratch: the portable weight gradient's padded input plane, then (stride 1) the forward kernel's scratch
// for the input gradient, a forward pass with dY as its input and the input plane as its output.
static size_t plane_scratch_size(ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top, ptrdiff_t pad_left,
                                 ptrdiff_t out_height, ptrdiff_t out_width) {
    const size_t padded = qf_fp32_depthwise3x3_scratch_size(height, width, pad_top, pad_left, out_height, out_width,
                                                            stride);
    if (stride != 1) return padded;
    const size_t forward = qf_fp32_depthwise3x3_scratch_size(out_height, out_width, 2 - pad_top, 2 - pad_left, height,
                                                             width, 1);
    return padded > forward ? padded : forward;
}

size_t qf_fp32_depthwise3x3_backward_scratch_size(ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride,
                                                  ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                                  ptrdiff_t out_width) {
    // Vector accumulators (16 floats per tap and channel), rotated kernels and zero biases (two copies each, see
    // below), one chunk of input gradient (when accumulating), the plane scratch.
    const ptrdiff_t chunk = chunk_planes(height, width, out_height, out_width);
    return (size_t)(144 * channels + 20 * channels + chunk * height * width) +
           plane_scratch_size(height, width, stride, pad_top, pad_left, out_height, out_width);
}

void qf_fp32_depthwise3x3_backward(int isa, const float* input, const float* output_gradient, const float* weights,
                                   ptrdiff_t first_plane, ptrdiff_t plane_count, ptrdiff_t channels,
                                   ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                   ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                   float* weight_gradient, float* input_gradient, int accumulate, float* scratch) {
    if (plane_count <= 0) return;
    const ptrdiff_t chunk = chunk_planes(height, width, out_height, out_width);
    const ptrdiff_t in_plane = height * width, out_plane = out_height * out_width;
    float* accumulators = scratch;
    float* rotated = accumulators + 144 * channels;
    float* zero_bias = rotated + 18 * channels;
    float* staged = zero_bias + 2 * channels;
    float* plane_scratch = staged + chunk * height * width;
    // AVX-512 weight gradient: 16-lane accumulators per tap and channel, reduced after the last chunk. The kernel
    // declines a geometry it does not handle on the first chunk, before touching anything.
    int vector_weight_gradient = weight_gradient != NULL && isa == QF_FP32_ISA_AVX512;
    if (vector_weight_gradient) memset(accumulators, 0, sizeof(float) * (size_t)(144 * channels));
    if (input_gradient != NULL && stride == 1) {
        // Channels 0..<2·channels (channel c as c mod channels): a chunk's forward call starts at its own first
        // plane with the weights shifted to that plane's channel (see below).
        for (ptrdiff_t c = 0; c < 2 * channels; ++c) {
            for (int tap = 0; tap < 9; ++tap) rotated[9 * c + tap] = weights[9 * (c % channels) + 8 - tap];
            zero_bias[c] = 0.0f;
        }
    }
    for (ptrdiff_t start = first_plane; start < first_plane + plane_count; start += chunk) {
        const ptrdiff_t remaining = first_plane + plane_count - start, count = remaining < chunk ? remaining : chunk;
        if (weight_gradient != NULL) {
#if defined(__x86_64__) || defined(__i386__)
            if (vector_weight_gradient) {
                vector_weight_gradient = qf_fp32_depthwise3x3_weight_gradient_avx512(
                    input, output_gradient, start, count, channels, height, width, stride, pad_top, pad_left,
                    out_height, out_width, accumulators);
            }
#endif
            if (!vector_weight_gradient) {
                weight_gradient_fallback(isa, input, output_gradient, weights, start, count, channels, height, width,
                                         stride, pad_top, pad_left, out_height, out_width, weight_gradient, NULL, 0,
                                         plane_scratch);
            }
        }
        if (input_gradient == NULL) continue;
        if (stride == 1) {
            // Planes 0..<count of the chunk: plane i has channel (start + i) mod channels, i.e. rotated kernel
            // start mod channels + i mod channels of the doubled table. Stored straight into dX, or into `staged`
            // and added.
            const ptrdiff_t shift = start % channels;
            float* target = accumulate ? staged : input_gradient + start * in_plane;
            qf_fp32_depthwise3x3_planes(isa, output_gradient + start * out_plane, 0, count, channels, out_height,
                                        out_width, 1, 2 - pad_top, 2 - pad_left, height, width, rotated + 9 * shift,
                                        zero_bias + shift, 0.0f, 0.0f, 0, target, plane_scratch);
            if (accumulate) {
                float* restrict dx = input_gradient + start * in_plane;
                for (ptrdiff_t i = 0; i < count * in_plane; ++i) dx[i] += staged[i];
            }
            continue;
        }
        input_gradient_stride2(isa, input, output_gradient, weights, start, count, channels, height, width, 2,
                               pad_top, pad_left, out_height, out_width, NULL, input_gradient, accumulate);
    }
    if (vector_weight_gradient) {
        for (ptrdiff_t c = 0; c < channels; ++c) {
            for (int tap = 0; tap < 9; ++tap) {
                const float* lanes = accumulators + 144 * c + 16 * tap;
                float sum = 0.0f;
                for (int lane = 0; lane < 16; ++lane) sum += lanes[lane];
                weight_gradient[9 * c + tap] += sum;
            }
        }
    }
}
