// FP32 3×3 depthwise convolution of one channel plane with AVX-512F intrinsics (bias and clamp fused).
//
// Direct kernels (qf_fp32_depthwise3x3_direct_avx512) read the NCHW plane itself: a tap that falls into the padding
// is a lane masked off in an AVX-512 masked load (zero, and masked lanes never fault), so no padded copy is made —
// the copy cost more than the 9 FMAs per output on MobileNet's small planes. Cases:
//   stride 1, out_width ≥ 16        per output row, 16 outputs per step (masks only at the row ends);
//   stride 1, width = out_width < 16 dividing 16, height = out_height
//                                   16 lanes span 16/width whole rows of the flat plane; a tap's mask is its
//                                   column validity (a fixed pattern) and its flat index range;
//   stride 2                        per output row, even/odd input columns through vpermt2ps.
// Anything else uses the padded-plane kernel below.
//
// Padded-plane kernel: input comes as the zero-bordered scratch plane built by fp32_depthwise.c (padded width pw, rows of pw floats),
// so every tap is an unaligned 16-float load with no bounds check:
//   stride 1, out_width ≥ 16   per output row, 16 outputs per step: 9 loads + 9 FMAs, masked store at the tail;
//   stride 1, out_width < 16   one flat pass over padded positions p = oy·pw + ox (16 lanes span several short
//                              rows, so 4×4 and 8×8 planes fill the vector), then the valid columns are copied out;
//   stride 2                   per output row, 16 outputs per step: the even and odd input columns come from two
//                              loads and vpermt2ps (taps kx = 0, 1) plus two loads shifted by 2 (kx = 2).
#include <string.h>

#include "qf_fp32.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "fp32_avx512_masks.h"

#define QF_AVX512 __attribute__((target("avx512f,fma")))

static inline QF_AVX512 __mmask16 tail_mask(ptrdiff_t remaining) {
    return remaining >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << remaining) - 1u);
}

// bias + Σ taps at `p` of three padded rows (stride 1).
static inline QF_AVX512 __m512 taps_stride1(const float* r0, const float* r1, const float* r2, const __m512 w[9],
                                            __m512 bias) {
    __m512 sum = _mm512_fmadd_ps(w[0], _mm512_loadu_ps(r0), bias);
    sum = _mm512_fmadd_ps(w[1], _mm512_loadu_ps(r0 + 1), sum);
    sum = _mm512_fmadd_ps(w[2], _mm512_loadu_ps(r0 + 2), sum);
    sum = _mm512_fmadd_ps(w[3], _mm512_loadu_ps(r1), sum);
    sum = _mm512_fmadd_ps(w[4], _mm512_loadu_ps(r1 + 1), sum);
    sum = _mm512_fmadd_ps(w[5], _mm512_loadu_ps(r1 + 2), sum);
    sum = _mm512_fmadd_ps(w[6], _mm512_loadu_ps(r2), sum);
    sum = _mm512_fmadd_ps(w[7], _mm512_loadu_ps(r2 + 1), sum);
    return _mm512_fmadd_ps(w[8], _mm512_loadu_ps(r2 + 2), sum);
}

static inline QF_AVX512 __m512 clamp(__m512 value, __m512 minimum, __m512 maximum) {
    // Second operand wins on NaN: NaN passes through.
    return _mm512_min_ps(maximum, _mm512_max_ps(minimum, value));
}

// One input row's three stride-2 taps for 16 outputs starting at padded column x.
static inline QF_AVX512 __m512 row_stride2(const float* row, __m512 w0, __m512 w1, __m512 w2, __m512 sum) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 low = _mm512_loadu_ps(row), high = _mm512_loadu_ps(row + 16);
    const __m512 lowShifted = _mm512_loadu_ps(row + 2), highShifted = _mm512_loadu_ps(row + 18);
    sum = _mm512_fmadd_ps(w0, _mm512_permutex2var_ps(low, even, high), sum);
    sum = _mm512_fmadd_ps(w1, _mm512_permutex2var_ps(low, odd, high), sum);
    return _mm512_fmadd_ps(w2, _mm512_permutex2var_ps(lowShifted, even, highShifted), sum);
}

QF_AVX512 void qf_fp32_depthwise3x3_padded_avx512(const float* padded, ptrdiff_t pw, int stride, ptrdiff_t out_height,
                                                  ptrdiff_t out_width, const float* weights, float bias_value,
                                                  float minimum_value, float maximum_value, float* output,
                                                  float* flat) {
    __m512 w[9];
    for (int i = 0; i < 9; ++i) w[i] = _mm512_set1_ps(weights[i]);
    const __m512 bias = _mm512_set1_ps(bias_value);
    const __m512 minimum = _mm512_set1_ps(minimum_value), maximum = _mm512_set1_ps(maximum_value);
    if (stride == 1 && out_width >= 16) {
        for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
            const float* r0 = padded + oy * pw;
            float* row = output + oy * out_width;
            for (ptrdiff_t ox = 0; ox < out_width; ox += 16) {
                const __m512 sum = clamp(taps_stride1(r0 + ox, r0 + pw + ox, r0 + 2 * pw + ox, w, bias), minimum, maximum);
                _mm512_mask_storeu_ps(row + ox, tail_mask(out_width - ox), sum);
            }
        }
        return;
    }
    if (stride == 1) {
        const ptrdiff_t count = (out_height - 1) * pw + out_width;
        for (ptrdiff_t p = 0; p < count; p += 16) {
            const __m512 sum = clamp(taps_stride1(padded + p, padded + pw + p, padded + 2 * pw + p, w, bias), minimum, maximum);
            _mm512_storeu_ps(flat + p, sum);
        }
        for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
            _mm512_mask_storeu_ps(output + oy * out_width, tail_mask(out_width), _mm512_loadu_ps(flat + oy * pw));
            for (ptrdiff_t ox = 16; ox < out_width; ++ox) output[oy * out_width + ox] = flat[oy * pw + ox];
        }
        return;
    }
    for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
        const float* r0 = padded + 2 * oy * pw;
        float* row = output + oy * out_width;
        for (ptrdiff_t ox = 0; ox < out_width; ox += 16) {
            const float* x0 = r0 + 2 * ox;
            __m512 sum = row_stride2(x0, w[0], w[1], w[2], bias);
            sum = row_stride2(x0 + pw, w[3], w[4], w[5], sum);
            sum = row_stride2(x0 + 2 * pw, w[6], w[7], w[8], sum);
            _mm512_mask_storeu_ps(row + ox, tail_mask(out_width - ox), clamp(sum, minimum, maximum));
        }
    }
}

// Per 16-output block of a row, the load masks of its taps and its store mask: they depend only on the column, so
// they are computed once per call (for every row and plane) instead of in the inner loop, where the scalar mask
// arithmetic outweighed the FMAs. Stride 1: taps kx = 0, 1, 2 at x0 + kx; stride 2: loads at x0, x0 + 16, x0 + 2,
// x0 + 18. Rows up to QF_MAX_ROW_BLOCKS·16 outputs wide.
#define QF_MAX_ROW_BLOCKS 16
typedef struct {
    __mmask16 load[QF_MAX_ROW_BLOCKS][4];
    __mmask16 store[QF_MAX_ROW_BLOCKS];
} row_masks;

static void compute_row_masks(int stride, ptrdiff_t width, ptrdiff_t pad_left, ptrdiff_t out_width, row_masks* masks) {
    for (ptrdiff_t block = 0; block * 16 < out_width; ++block) {
        const ptrdiff_t x0 = stride * 16 * block - pad_left;
        static const int stride1_offsets[4] = {0, 1, 2, 0}, stride2_offsets[4] = {0, 16, 2, 18};
        for (int i = 0; i < 4; ++i) {
            masks->load[block][i] = range_mask(x0 + (stride == 1 ? stride1_offsets[i] : stride2_offsets[i]), width);
        }
        masks->store[block] = range_mask(16 * block, out_width);
    }
}

// Two output rows per pass: they share two of their four input rows, and two independent FMA chains hide the
// FMA latency (one 9-FMA chain per vector would be latency-bound).
static QF_AVX512 void direct_stride1_rows(const float* input, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top,
                                          ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                          const __m512 w[9], __m512 bias, __m512 minimum, __m512 maximum,
                                          float* output, const row_masks* masks) {
    for (ptrdiff_t oy = 0; oy < out_height; oy += 2) {
        const int pair = oy + 1 < out_height;
        for (ptrdiff_t ox = 0, block = 0; ox < out_width; ox += 16, ++block) {
            const ptrdiff_t x0 = ox - pad_left;
            const __mmask16 m0 = masks->load[block][0], m1 = masks->load[block][1], m2 = masks->load[block][2];
            __m512 top = bias, bottom = bias;
            // Input row r (0..3) feeds output row oy with weights row r and output row oy+1 with weights row r-1.
            for (int r = 0; r < 4; ++r) {
                const ptrdiff_t y = oy + r - pad_top;
                if (y < 0 || y >= height) continue;
                const float* source = input + y * width + x0;
                const __m512 t0 = _mm512_maskz_loadu_ps(m0, source);
                const __m512 t1 = _mm512_maskz_loadu_ps(m1, source + 1);
                const __m512 t2 = _mm512_maskz_loadu_ps(m2, source + 2);
                if (r < 3) {
                    top = _mm512_fmadd_ps(w[3 * r], t0, top);
                    top = _mm512_fmadd_ps(w[3 * r + 1], t1, top);
                    top = _mm512_fmadd_ps(w[3 * r + 2], t2, top);
                }
                if (r > 0) {
                    bottom = _mm512_fmadd_ps(w[3 * r - 3], t0, bottom);
                    bottom = _mm512_fmadd_ps(w[3 * r - 2], t1, bottom);
                    bottom = _mm512_fmadd_ps(w[3 * r - 1], t2, bottom);
                }
            }
            const __mmask16 store = masks->store[block];
            _mm512_mask_storeu_ps(output + oy * out_width + ox, store, clamp(top, minimum, maximum));
            if (pair) _mm512_mask_storeu_ps(output + (oy + 1) * out_width + ox, store, clamp(bottom, minimum, maximum));
        }
    }
}

// width = out_width divides 16, height = out_height: the plane is a flat array and one vector covers whole rows.
// Up to four vectors (64 outputs) are computed tap-major so their four FMA chains run in parallel.
static QF_AVX512 void direct_stride1_flat(const float* input, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top,
                                          ptrdiff_t pad_left, const __m512 w[9], __m512 bias, __m512 minimum,
                                          __m512 maximum, float* output) {
    // Column validity of each horizontal tap: lane j sits in column j mod width (width is a power of two).
    __mmask16 column_valid[3];
    for (int kx = 0; kx < 3; ++kx) {
        unsigned mask = 0;
        for (int j = 0; j < 16; ++j) {
            const ptrdiff_t x = (j & (width - 1)) + kx - pad_left;
            if (x >= 0 && x < width) mask |= 1u << j;
        }
        column_valid[kx] = (__mmask16)mask;
    }
    const ptrdiff_t count = height * width;
    for (ptrdiff_t block = 0; block < count; block += 64) {
        // Four named accumulators (an array of them was spilled to the stack, serialising the FMAs through memory);
        // vectors past the plane load and store nothing (empty masks).
        __m512 s0 = bias, s1 = bias, s2 = bias, s3 = bias;
        for (int tap = 0; tap < 9; ++tap) {
            const int ky = tap / 3, kx = tap % 3;
            const ptrdiff_t start = block + (ky - pad_top) * width + (kx - pad_left);
            const __mmask16 columns = column_valid[kx];
            s0 = _mm512_fmadd_ps(w[tap], _mm512_maskz_loadu_ps(columns & range_mask(start, count), input + start), s0);
            s1 = _mm512_fmadd_ps(w[tap], _mm512_maskz_loadu_ps(columns & range_mask(start + 16, count), input + start + 16), s1);
            s2 = _mm512_fmadd_ps(w[tap], _mm512_maskz_loadu_ps(columns & range_mask(start + 32, count), input + start + 32), s2);
            s3 = _mm512_fmadd_ps(w[tap], _mm512_maskz_loadu_ps(columns & range_mask(start + 48, count), input + start + 48), s3);
        }
        _mm512_mask_storeu_ps(output + block, range_mask(block, count), clamp(s0, minimum, maximum));
        _mm512_mask_storeu_ps(output + block + 16, range_mask(block + 16, count), clamp(s1, minimum, maximum));
        _mm512_mask_storeu_ps(output + block + 32, range_mask(block + 32, count), clamp(s2, minimum, maximum));
        _mm512_mask_storeu_ps(output + block + 48, range_mask(block + 48, count), clamp(s3, minimum, maximum));
    }
}

static QF_AVX512 void direct_stride2_rows(const float* input, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top,
                                          ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                          const __m512 w[9], __m512 bias, __m512 minimum, __m512 maximum,
                                          float* output, const row_masks* masks) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
        float* row = output + oy * out_width;
        for (ptrdiff_t ox = 0, block = 0; ox < out_width; ox += 16, ++block) {
            const ptrdiff_t x0 = 2 * ox - pad_left;
            const __mmask16 m0 = masks->load[block][0], m16 = masks->load[block][1];
            const __mmask16 m2 = masks->load[block][2], m18 = masks->load[block][3];
            __m512 sum = bias;
            for (int ky = 0; ky < 3; ++ky) {
                const ptrdiff_t y = 2 * oy + ky - pad_top;
                if (y < 0 || y >= height) continue;
                const float* source = input + y * width + x0;
                const __m512 low = _mm512_maskz_loadu_ps(m0, source), high = _mm512_maskz_loadu_ps(m16, source + 16);
                const __m512 low2 = _mm512_maskz_loadu_ps(m2, source + 2), high2 = _mm512_maskz_loadu_ps(m18, source + 18);
                sum = _mm512_fmadd_ps(w[3 * ky], _mm512_permutex2var_ps(low, even, high), sum);
                sum = _mm512_fmadd_ps(w[3 * ky + 1], _mm512_permutex2var_ps(low, odd, high), sum);
                sum = _mm512_fmadd_ps(w[3 * ky + 2], _mm512_permutex2var_ps(low2, even, high2), sum);
            }
            _mm512_mask_storeu_ps(row + ox, masks->store[block], clamp(sum, minimum, maximum));
        }
    }
}

// One plane with the direct kernels; `masks` from compute_row_masks for the row kernels (unused when flat).
static QF_AVX512 void direct_plane(const float* input, ptrdiff_t height, ptrdiff_t width, int stride, int flat,
                                   ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                   const float* weights, float bias_value, __m512 minimum, __m512 maximum,
                                   float* output, const row_masks* masks) {
    __m512 w[9];
    for (int i = 0; i < 9; ++i) w[i] = _mm512_set1_ps(weights[i]);
    const __m512 bias = _mm512_set1_ps(bias_value);
    if (stride == 2) {
        direct_stride2_rows(input, height, width, pad_top, pad_left, out_height, out_width, w, bias, minimum, maximum,
                            output, masks);
    } else if (flat) {
        direct_stride1_flat(input, height, width, pad_top, pad_left, w, bias, minimum, maximum, output);
    } else {
        direct_stride1_rows(input, height, width, pad_top, pad_left, out_height, out_width, w, bias, minimum, maximum,
                            output, masks);
    }
}

static int is_flat(int stride, ptrdiff_t height, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width) {
    return stride == 1 && width < 16 && 16 % width == 0 && out_width == width && out_height == height;
}

static int direct_supported(int stride, ptrdiff_t height, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width) {
    if (out_width > 16 * QF_MAX_ROW_BLOCKS) return 0;
    return stride == 2 || (stride == 1 && out_width >= 16) || is_flat(stride, height, width, out_height, out_width);
}

QF_AVX512 int qf_fp32_depthwise3x3_direct_avx512(const float* input, ptrdiff_t height, ptrdiff_t width, int stride,
                                                 ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                                 ptrdiff_t out_width, const float* weights, float bias_value,
                                                 float minimum_value, float maximum_value, float* output) {
    if (!direct_supported(stride, height, width, out_height, out_width)) return 0;
    row_masks masks;
    compute_row_masks(stride, width, pad_left, out_width, &masks);
    direct_plane(input, height, width, stride, is_flat(stride, height, width, out_height, out_width), pad_top,
                 pad_left, out_height, out_width, weights, bias_value, _mm512_set1_ps(minimum_value),
                 _mm512_set1_ps(maximum_value), output, &masks);
    return 1;
}

// Many planes of one geometry. Small flat planes (width = out_width dividing 16, ≤ 64 outputs: MobileNet's 8×8 and
// 4×4 stages) get their 9×4 tap masks computed once for all planes — per plane, the scalar mask arithmetic cost
// more than the 36 FMAs it guards. Returns 0 when no direct kernel handles the geometry.
QF_AVX512 int qf_fp32_depthwise3x3_planes_avx512(const float* input, ptrdiff_t first_plane, ptrdiff_t plane_count,
                                                 ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride,
                                                 ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                                 ptrdiff_t out_width, const float* weights, const float* bias,
                                                 float minimum_value, float maximum_value, float* output) {
    const ptrdiff_t count = height * width;
    if (!direct_supported(stride, height, width, out_height, out_width)) return 0;
    const int flat = is_flat(stride, height, width, out_height, out_width);
    const ptrdiff_t in_plane = count, out_plane = out_height * out_width;
    if (!flat || count > 64) {
        row_masks row_masks_table;
        compute_row_masks(stride, width, pad_left, out_width, &row_masks_table);
        const __m512 minimum = _mm512_set1_ps(minimum_value), maximum = _mm512_set1_ps(maximum_value);
        for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
            const ptrdiff_t channel = plane % channels;
            direct_plane(input + plane * in_plane, height, width, stride, flat, pad_top, pad_left, out_height,
                         out_width, weights + 9 * channel, bias[channel], minimum, maximum,
                         output + plane * out_plane, &row_masks_table);
        }
        return 1;
    }
    __mmask16 masks[9][4];
    ptrdiff_t offsets[9];
    flat_plane_tap_masks(count, width, pad_top, pad_left, masks, offsets);
    const __mmask16 store0 = range_mask(0, count), store1 = range_mask(16, count);
    const __mmask16 store2 = range_mask(32, count), store3 = range_mask(48, count);
    const __m512 minimum = _mm512_set1_ps(minimum_value), maximum = _mm512_set1_ps(maximum_value);
    if (count <= 16) {
        // 4×4 planes: one vector holds the plane; the other three would only load and store nothing.
        for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
            const ptrdiff_t channel = plane % channels;
            const float* source = input + plane * in_plane;
            const float* w = weights + 9 * channel;
            __m512 s0 = _mm512_set1_ps(bias[channel]);
            for (int tap = 0; tap < 9; ++tap) {
                s0 = _mm512_fmadd_ps(_mm512_set1_ps(w[tap]), _mm512_maskz_loadu_ps(masks[tap][0], source + offsets[tap]), s0);
            }
            _mm512_mask_storeu_ps(output + plane * out_plane, store0, clamp(s0, minimum, maximum));
        }
        return 1;
    }
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        const ptrdiff_t channel = plane % channels;
        const float* source = input + plane * in_plane;
        const float* w = weights + 9 * channel;
        const __m512 b = _mm512_set1_ps(bias[channel]);
        __m512 s0 = b, s1 = b, s2 = b, s3 = b;
        for (int tap = 0; tap < 9; ++tap) {
            const __m512 weight = _mm512_set1_ps(w[tap]);
            const float* at = source + offsets[tap];
            s0 = _mm512_fmadd_ps(weight, _mm512_maskz_loadu_ps(masks[tap][0], at), s0);
            s1 = _mm512_fmadd_ps(weight, _mm512_maskz_loadu_ps(masks[tap][1], at + 16), s1);
            s2 = _mm512_fmadd_ps(weight, _mm512_maskz_loadu_ps(masks[tap][2], at + 32), s2);
            s3 = _mm512_fmadd_ps(weight, _mm512_maskz_loadu_ps(masks[tap][3], at + 48), s3);
        }
        float* out = output + plane * out_plane;
        _mm512_mask_storeu_ps(out, store0, clamp(s0, minimum, maximum));
        _mm512_mask_storeu_ps(out + 16, store1, clamp(s1, minimum, maximum));
        _mm512_mask_storeu_ps(out + 32, store2, clamp(s2, minimum, maximum));
        _mm512_mask_storeu_ps(out + 48, store3, clamp(s3, minimum, maximum));
    }
    return 1;
}

#endif
