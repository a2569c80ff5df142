// Backward of the FP32 3×3 depthwise convolution (stride 1 or 2): weight gradient and input gradient of whole
// planes, for the training engine.
//
// AVX-512: planes in chunks of about QF_CHUNK_FLOATS floats, first the weight gradient of the chunk, then its input
// gradient, which finds dY still in L2 (dY is read from memory once for both). The weight gradient and the stride-2
// input gradient are the kernels of fp32_depthwise_backward_avx512.c. The stride-1 input gradient,
//   dX[y][x] = Σ w[ky][kx] · dY[y + pad_top − ky][x + pad_left − kx],
// is the forward convolution of dY with the kernel rotated by 180° and padding 2 − pad (top/left), so it runs the
// forward's direct masked-load kernels (qf_fp32_depthwise3x3_planes) instead of a kernel of its own.
//
// Other ISAs (and geometries the AVX-512 kernels do not take): one portable body, instantiated for the baseline and
// AVX2+FMA via target attributes and left to the auto-vectoriser, one plane at a time over zero-bordered copies of
// the input and of dY whose borders are zeroed once per call (only the interiors are copied per plane):
//   weight gradient   one pass over dY with nine 8-lane accumulators (explicit lanes: float sums are not
//                     reassociated by the vectoriser);
//   dX, stride 1      the rotated kernel over the padded dY as one flat loop over padded positions (full vectors even
//                     on 4- and 8-wide planes), then the valid columns are stored or added;
//   dX, stride 2      gather form per input row: only kernel rows ky with y + pad_top − ky even contribute, and input
//                     column 2j + e (e = 0, 1) takes dY columns j + offset for the kx of its parity; the even and the
//                     odd columns are two unit-stride loops, then interleaved into the row.
#include <string.h>

#include "qf_fp32.h"

#define QF_CHUNK_FLOATS 16384

static inline ptrdiff_t max_size(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }

// Loops over a few (4–16) elements: vectorised 4 wide without interleaving, or the vectoriser's default (8 wide,
// 4 interleaved on AVX2) would leave all of them to the scalar remainder.
#if defined(__clang__)
#define QF_SHORT_LOOP _Pragma("clang loop vectorize_width(4) interleave_count(1)")
#else
#define QF_SHORT_LOOP
#endif

// ---- Portable ----

// The zero-bordered planes of the portable body. Input (weight gradient): rows of pw floats, the input at
// (pad_top, pad_left). dY, stride 1: rows of qw floats, dY at (2 − pad_top, 2 − pad_left), so the input gradient is
// a plain 3×3 correlation of it; stride 2: qh = out_height rows of qw floats, dY at column 1 (zero columns around
// every offset −1..1 of every even/odd lane).
typedef struct {
    ptrdiff_t pw, ph, qw, qh;
} portable_layout;

static portable_layout portable_planes(ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                       ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width) {
    portable_layout layout;
    layout.pw = max_size(pad_left + width, (out_width - 1) * stride + 3);
    layout.ph = max_size(pad_top + height, (out_height - 1) * stride + 3);
    if (stride == 1) {
        layout.qw = max_size(2 - pad_left + out_width, width + 2);
        layout.qh = max_size(2 - pad_top + out_height, height + 2);
    } else {
        layout.qw = max_size(out_width + 3, (width + 1) / 2 + 2);
        layout.qh = out_height;
    }
    return layout;
}

static ptrdiff_t portable_rest_size(ptrdiff_t height, ptrdiff_t width, int stride, portable_layout l) {
    return stride == 1 ? height * l.qw : width + 2;
}

static size_t portable_scratch_size(ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                    ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width) {
    const portable_layout l = portable_planes(height, width, stride, pad_top, pad_left, out_height, out_width);
    // Both planes, then the flat stride-1 result (height rows of qw) or the even and odd stride-2 columns, then one
    // input plane computed from an affine input and one output-gradient plane computed from an affine gradient.
    return (size_t)(l.ph * l.pw + l.qh * l.qw + portable_rest_size(height, width, stride, l) + height * width +
                    out_height * out_width);
}

// Copies a plane into the interior of a zero-bordered one (the border is never written, so it stays zero).
static inline __attribute__((always_inline)) void copy_interior(const float* restrict plane, ptrdiff_t height,
                                                                 ptrdiff_t width, float* restrict padded,
                                                                 ptrdiff_t padded_width, ptrdiff_t top,
                                                                 ptrdiff_t left) {
    for (ptrdiff_t y = 0; y < height; ++y) {
        float* restrict row = padded + (top + y) * padded_width + left;
        for (ptrdiff_t x = 0; x < width; ++x) row[x] = plane[y * width + x];
    }
}

// weight_gradient[ky·3 + kx] += Σ dY[oy][ox] · padded[oy·stride + ky][ox·stride + kx] of one plane.
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

// Stride-1 input gradient of one plane: `rotated` (the kernel turned by 180°) over the padded dY, flat.
static inline __attribute__((always_inline)) void input_gradient_stride1_plane(
    const float* restrict padded, ptrdiff_t qw, const float* restrict rotated, ptrdiff_t height, ptrdiff_t width,
    float* restrict flat, float* restrict dx, int accumulate) {
    const float w0 = rotated[0], w1 = rotated[1], w2 = rotated[2], w3 = rotated[3], w4 = rotated[4];
    const float w5 = rotated[5], w6 = rotated[6], w7 = rotated[7], w8 = rotated[8];
    const float* restrict r0 = padded;
    const float* restrict r1 = padded + qw;
    const float* restrict r2 = padded + 2 * qw;
    const ptrdiff_t count = (height - 1) * qw + width;
    // Explicit 8-lane blocks: as a plain loop, the vectoriser carried r[p + 1], r[p + 2] over from the previous
    // iteration through shuffles (a recurrence), slower than reloading them.
    ptrdiff_t p = 0;
    for (; p + 8 <= count; p += 8) {
        for (int lane = 0; lane < 8; ++lane) {
            const ptrdiff_t i = p + lane;
            flat[i] = w0 * r0[i] + w1 * r0[i + 1] + w2 * r0[i + 2] + w3 * r1[i] + w4 * r1[i + 1] + w5 * r1[i + 2] +
                      w6 * r2[i] + w7 * r2[i + 1] + w8 * r2[i + 2];
        }
    }
    for (; p < count; ++p) {
        flat[p] = w0 * r0[p] + w1 * r0[p + 1] + w2 * r0[p + 2] + w3 * r1[p] + w4 * r1[p + 1] + w5 * r1[p + 2] +
                  w6 * r2[p] + w7 * r2[p + 1] + w8 * r2[p + 2];
    }
    for (ptrdiff_t y = 0; y < height; ++y) {
        float* restrict row = dx + y * width;
        const float* restrict source = flat + y * qw;
        if (accumulate) {
            for (ptrdiff_t x = 0; x < width; ++x) row[x] += source[x];
        } else {
            for (ptrdiff_t x = 0; x < width; ++x) row[x] = source[x];
        }
    }
}

// The taps of each column parity for stride 2: input column x = 2j + e takes w[·][kx]·dY[·][j + offset] for the kx
// with e + pad_left − kx even, offset = (e + pad_left − kx)/2 ∈ −1..1.
typedef struct {
    int count[2], kx[2][2], offset[2][2];
} column_terms;

static column_terms stride2_column_terms(ptrdiff_t pad_left) {
    column_terms terms;
    for (int e = 0; e < 2; ++e) {
        terms.count[e] = 0;
        for (int kx = 0; kx < 3; ++kx) {
            const int u = e + (int)pad_left - kx;
            if (u % 2 != 0) continue;
            terms.kx[e][terms.count[e]] = kx;
            terms.offset[e][terms.count[e]] = u / 2;
            ++terms.count[e];
        }
    }
    return terms;
}

// Stride-2 input gradient of one plane: dY rows of qw floats with dY[oy][ox] at padded[oy·qw + 1 + ox].
static inline __attribute__((always_inline)) void input_gradient_stride2_plane(
    const float* restrict padded, ptrdiff_t qw, const float* restrict weights, const column_terms* terms,
    ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t out_height, float* restrict even,
    float* restrict odd, float* restrict dx, int accumulate) {
    const ptrdiff_t even_count = (width + 1) / 2, odd_count = width / 2;
    for (ptrdiff_t y = 0; y < height; ++y) {
        for (ptrdiff_t j = 0; j < even_count; ++j) even[j] = 0.0f;
        for (ptrdiff_t j = 0; j < odd_count; ++j) odd[j] = 0.0f;
        for (int ky = 0; ky < 3; ++ky) {
            const ptrdiff_t q = y + pad_top - ky;
            if (q < 0 || q % 2 != 0 || q / 2 >= out_height) continue;
            const float* restrict source = padded + (q / 2) * qw + 1;
            for (int t = 0; t < terms->count[0]; ++t) {
                const float w = weights[3 * ky + terms->kx[0][t]];
                const float* restrict s = source + terms->offset[0][t];
                QF_SHORT_LOOP for (ptrdiff_t j = 0; j < even_count; ++j) even[j] += w * s[j];
            }
            for (int t = 0; t < terms->count[1]; ++t) {
                const float w = weights[3 * ky + terms->kx[1][t]];
                const float* restrict s = source + terms->offset[1][t];
                QF_SHORT_LOOP for (ptrdiff_t j = 0; j < odd_count; ++j) odd[j] += w * s[j];
            }
        }
        float* restrict row = dx + y * width;
        if (accumulate) {
            for (ptrdiff_t j = 0; j < odd_count; ++j) row[2 * j] += even[j], row[2 * j + 1] += odd[j];
            if (width % 2 != 0) row[width - 1] += even[even_count - 1];
        } else {
            for (ptrdiff_t j = 0; j < odd_count; ++j) row[2 * j] = even[j], row[2 * j + 1] = odd[j];
            if (width % 2 != 0) row[width - 1] = even[even_count - 1];
        }
    }
}

// With an affine input that asks for them: BatchNorm's backward sums over the input gradient just written (still in
// cache), d = dx through the clamp's mask — the first pass of BatchNorm's backward, which then need not read dx and
// x again. Only a stored input gradient is the whole gradient of those planes.
static void add_affine_gradient_sums(int isa, const qf_fp32_channel_affine* affine, const float* dx, const float* input,
                                     ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels, ptrdiff_t size,
                                     int accumulate) {
    if (!affine || !affine->gradient_sum || accumulate) return;
    qf_fp32_batchnorm_gradient_sums(isa, dx, input, first, count, channels, size, affine->scale, affine->offset,
                                    affine->minimum, affine->maximum, affine->clamp, affine->gradient_sum,
                                    affine->gradient_dot);
}

#define QF_BACKWARD_PARAMETERS                                                                                       \
    const float *input, const qf_fp32_channel_affine *affine, const float *dy,                                       \
        const qf_fp32_gradient_affine *dy_affine, const float *weights,                                               \
        ptrdiff_t first_plane, ptrdiff_t plane_count, ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width,          \
        int stride, ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,                \
        float *weight_gradient, float *dx, int accumulate, float *scratch
#define QF_BACKWARD_ARGUMENTS                                                                                        \
    input, affine, dy, dy_affine, weights, first_plane, plane_count, channels, height, width, stride, pad_top,        \
        pad_left, out_height, out_width, weight_gradient, dx, accumulate, scratch

static inline __attribute__((always_inline)) void backward_body(int isa, QF_BACKWARD_PARAMETERS) {
    const portable_layout l = portable_planes(height, width, stride, pad_top, pad_left, out_height, out_width);
    float* padded_input = scratch;
    float* padded_dy = padded_input + l.ph * l.pw;
    float* rest = padded_dy + l.qh * l.qw;
    float* computed_input = rest + portable_rest_size(height, width, stride, l);
    float* computed_dy = computed_input + height * width;
    if (weight_gradient != NULL) memset(padded_input, 0, sizeof(float) * (size_t)(l.ph * l.pw));
    if (dx != NULL) memset(padded_dy, 0, sizeof(float) * (size_t)(l.qh * l.qw));
    const column_terms terms = stride2_column_terms(pad_left);
    const ptrdiff_t in_plane = height * width, out_plane = out_height * out_width;
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        const ptrdiff_t channel = plane % channels;
        const float* d = dy + plane * out_plane;
        if (dy_affine) {
            qf_fp32_gradient_affine_planes(isa, dy, plane, 1, channels, out_plane, dy_affine, computed_dy);
            d = computed_dy;
        }
        if (weight_gradient != NULL) {
            const float* x = input + plane * in_plane;
            if (affine) {
                qf_fp32_channel_affine_planes(isa, input, plane, 1, channels, in_plane, affine, computed_input);
                x = computed_input;
            }
            copy_interior(x, height, width, padded_input, l.pw, pad_top, pad_left);
            // A literal stride, so the lane loop has a constant step.
            if (stride == 1) {
                weight_gradient_plane(padded_input, l.pw, 1, d, out_height, out_width, weight_gradient + 9 * channel);
            } else {
                weight_gradient_plane(padded_input, l.pw, 2, d, out_height, out_width, weight_gradient + 9 * channel);
            }
        }
        if (dx == NULL) continue;
        if (stride == 1) {
            copy_interior(d, out_height, out_width, padded_dy, l.qw, 2 - pad_top, 2 - pad_left);
            float rotated[9];
            for (int tap = 0; tap < 9; ++tap) rotated[tap] = weights[9 * channel + 8 - tap];
            input_gradient_stride1_plane(padded_dy, l.qw, rotated, height, width, rest, dx + plane * in_plane,
                                         accumulate);
        } else {
            copy_interior(d, out_height, out_width, padded_dy, l.qw, 0, 1);
            input_gradient_stride2_plane(padded_dy, l.qw, weights + 9 * channel, &terms, height, width, pad_top,
                                         out_height, rest, rest + (width + 1) / 2, dx + plane * in_plane, accumulate);
        }
        add_affine_gradient_sums(isa, affine, dx, input, plane, 1, channels, in_plane, accumulate);
    }
}

static void backward_portable(QF_BACKWARD_PARAMETERS) { backward_body(QF_FP32_ISA_PORTABLE, QF_BACKWARD_ARGUMENTS); }

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) static void backward_avx2(QF_BACKWARD_PARAMETERS) {
    backward_body(QF_FP32_ISA_AVX2, QF_BACKWARD_ARGUMENTS);
}

// ---- AVX-512 ----

static ptrdiff_t chunk_planes(ptrdiff_t height, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width) {
    const ptrdiff_t largest = max_size(max_size(height * width, out_height * out_width), 1);
    return largest >= QF_CHUNK_FLOATS ? 1 : QF_CHUNK_FLOATS / largest;
}

static size_t avx512_scratch_size(ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride,
                                  ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width) {
    // Vector accumulators (16 floats per tap and channel), rotated kernels and zero biases (two copies each, see
    // below), one chunk of input gradient (staged when accumulating), one chunk of input computed from an affine
    // input, one chunk of output gradient computed from an affine gradient, the forward kernel's scratch (stride 1: a forward pass with dY as its input and the input plane as
    // its output).
    const size_t forward = stride == 1 ? qf_fp32_depthwise3x3_scratch_size(out_height, out_width, 2 - pad_top,
                                                                            2 - pad_left, height, width, 1)
                                       : 0;
    const ptrdiff_t chunk = chunk_planes(height, width, out_height, out_width);
    return (size_t)(164 * channels + chunk * (2 * height * width + out_height * out_width)) + forward;
}

static void backward_avx512(QF_BACKWARD_PARAMETERS) {
    const ptrdiff_t chunk = chunk_planes(height, width, out_height, out_width);
    const ptrdiff_t in_plane = height * width, out_plane = out_height * out_width;
    float* accumulators = scratch;
    float* rotated = accumulators + 144 * channels;
    float* zero_bias = rotated + 18 * channels;
    float* staged = zero_bias + 2 * channels;
    float* computed_input = staged + chunk * in_plane;
    float* computed_dy = computed_input + chunk * in_plane;
    float* forward_scratch = computed_dy + chunk * out_plane;
    if (weight_gradient != NULL) memset(accumulators, 0, sizeof(float) * (size_t)(144 * channels));
    if (dx != NULL && stride == 1) {
        // Channels 0..<2·channels (channel c as c mod channels): a chunk's forward call starts at its own first
        // plane with the table shifted to that plane's channel (see below).
        for (ptrdiff_t c = 0; c < 2 * channels; ++c) {
            for (int tap = 0; tap < 9; ++tap) rotated[9 * c + tap] = weights[9 * (c % channels) + 8 - tap];
            zero_bias[c] = 0.0f;
        }
    }
    for (ptrdiff_t start = first_plane; start < first_plane + plane_count; start += chunk) {
        const ptrdiff_t count = first_plane + plane_count - start < chunk ? first_plane + plane_count - start : chunk;
        // This chunk's output gradient (plane `start` first).
        const float* chunk_dy = dy + start * out_plane;
        if (dy_affine) {
            qf_fp32_gradient_affine_planes(QF_FP32_ISA_AVX512, dy, start, count, channels, out_plane, dy_affine,
                                           computed_dy);
            chunk_dy = computed_dy;
        }
        if (weight_gradient != NULL) {
            const float* x = input + start * in_plane;
            if (affine) {
                qf_fp32_channel_affine_planes(QF_FP32_ISA_AVX512, input, start, count, channels, in_plane, affine,
                                              computed_input);
                x = computed_input;
            }
            qf_fp32_depthwise3x3_weight_gradient_avx512(x, chunk_dy, start, count, channels, height,
                                                        width, stride, pad_top, pad_left, out_height, out_width,
                                                        accumulators);
        }
        if (dx == NULL) continue;
        if (stride == 2) {
            qf_fp32_depthwise3x3_input_gradient_stride2_avx512(chunk_dy, weights, start, count, channels, height, width,
                                                               pad_top, pad_left, out_height, out_width, dx,
                                                               accumulate);
        } else {
            // Plane i of the chunk has channel (start + i) mod channels: rotated kernel start mod channels + i mod
            // channels of the doubled table. Stored straight into dX, or into `staged` and added.
            const ptrdiff_t shift = start % channels;
            float* target = accumulate ? staged : dx + start * in_plane;
            qf_fp32_depthwise3x3_planes(QF_FP32_ISA_AVX512, chunk_dy, 0, count, channels, out_height,
                                        out_width, 1, 2 - pad_top, 2 - pad_left, height, width, rotated + 9 * shift,
                                        zero_bias + shift, 0.0f, 0.0f, 0, target, forward_scratch);
            if (accumulate) {
                float* restrict gradient = dx + start * in_plane;
                for (ptrdiff_t i = 0; i < count * in_plane; ++i) gradient[i] += staged[i];
            }
        }
        add_affine_gradient_sums(QF_FP32_ISA_AVX512, affine, dx, input, start, count, channels, in_plane, accumulate);
    }
    if (weight_gradient == NULL) return;
    for (ptrdiff_t c = 0; c < channels; ++c) {
        for (int tap = 0; tap < 9; ++tap) {
            const float* lanes = accumulators + 144 * c + 16 * tap;
            float sum = 0.0f;
            for (int lane = 0; lane < 16; ++lane) sum += lanes[lane];
            weight_gradient[9 * c + tap] += sum;
        }
    }
}
#endif

size_t qf_fp32_depthwise3x3_backward_scratch_size(ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride,
                                                  ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                                  ptrdiff_t out_width) {
    size_t size = portable_scratch_size(height, width, stride, pad_top, pad_left, out_height, out_width);
#if defined(__x86_64__) || defined(__i386__)
    const size_t avx512 = avx512_scratch_size(channels, height, width, stride, pad_top, pad_left, out_height, out_width);
    if (avx512 > size) size = avx512;
#endif
    (void)channels;
    return size;
}

void qf_fp32_depthwise3x3_backward(int isa, const float* input, const qf_fp32_channel_affine* input_affine,
                                   const float* output_gradient, const qf_fp32_gradient_affine* output_gradient_affine,
                                   const float* weights,
                                   ptrdiff_t first_plane, ptrdiff_t plane_count, ptrdiff_t channels,
                                   ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                   ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                   float* weight_gradient, float* input_gradient, int accumulate, float* scratch) {
    if (plane_count <= 0 || (weight_gradient == NULL && input_gradient == NULL)) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512 && qf_fp32_depthwise3x3_backward_avx512_handles(stride, width, out_width)) {
        backward_avx512(input, input_affine, output_gradient, output_gradient_affine, weights, first_plane, plane_count, channels, height, width, stride,
                        pad_top, pad_left, out_height, out_width, weight_gradient, input_gradient, accumulate,
                        scratch);
        return;
    }
    if (isa >= QF_FP32_ISA_AVX2) {
        backward_avx2(input, input_affine, output_gradient, output_gradient_affine, weights, first_plane, plane_count, channels, height, width, stride,
                      pad_top, pad_left, out_height, out_width, weight_gradient, input_gradient, accumulate, scratch);
        return;
    }
#endif
    (void)isa;
    backward_portable(input, input_affine, output_gradient, output_gradient_affine, weights, first_plane, plane_count, channels, height, width, stride,
                      pad_top, pad_left, out_height, out_width, weight_gradient, input_gradient, accumulate, scratch);
}
