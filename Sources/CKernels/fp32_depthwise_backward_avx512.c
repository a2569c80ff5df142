// Backward of the FP32 3×3 depthwise convolution with AVX-512F intrinsics: the weight gradient (stride 1 and 2) and
// the stride-2 input gradient. The stride-1 input gradient is the forward kernel run on dY with the kernel rotated
// by 180° (fp32_depthwise_backward.c calls it), so it has no kernel here.
//
// Like the direct forward kernels (fp32_depthwise_avx512.c), everything reads the unpadded NCHW planes: a tap in
// the padding is a masked-off lane (zero; masked lanes never fault).
//
// Weight gradient: dW[c][ky][kx] = Σ dY[oy][ox] · in[oy·s + ky − pad_top][ox·s + kx − pad_left] over every image.
// Nine vector accumulators per channel live in memory (16 floats each, `accumulators + 144·c`) for the whole call:
// each plane loads its channel's nine, adds to them and stores them back. Reducing nine vectors to scalars per
// plane cost more than the FMAs of a 4×4 or 8×8 plane; the caller reduces once per call. Lanes past the output
// row are masked off in the input loads too (not only in dY), so an ∞ outside the window cannot make 0·∞ = NaN.
//   stride 1, rows   two output rows per pass (they share two of their four input rows): 16 outputs per step;
//   stride 1, flat   width = out_width < 16 dividing 16, height = out_height, plane ≤ 64 floats (MobileNet's 8×8
//                    and 4×4 stages): 16 lanes span whole rows; tap masks computed once per call;
//   stride 2, rows   16 outputs per step, the even/odd input columns through vpermt2ps.
//
// Stride-2 input gradient, in gather form (no scatter): for input row y only the kernel rows ky with y + pad_top − ky
// even contribute (1 or 2 of them), and likewise for columns by parity. A block of 32 input columns is computed as
// its 16 even and its 16 odd columns — each a sum of dY row loads at a fixed offset (−1, 0 or 1) times one weight
// — interleaved into two stores by vpermt2ps. Planes of up to 64 inputs (8×8) go flat instead, see
// input_gradient_stride2_small.
#include "qf_fp32.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "fp32_avx512_masks.h"

#define QF_AVX512 __attribute__((target("avx512f,fma")))
// Rows of up to QF_MAX_BLOCKS·16 outputs (weight gradient) and QF_MAX_BLOCKS·32 input columns (input gradient).
#define QF_MAX_BLOCKS 16

// Per 16-output block of a row: the store (dY) mask and the load masks of the taps, each ANDed with the dY mask.
// Stride 1: loads at x0 + kx; stride 2: at x0, x0 + 16, x0 + 2, x0 + 18 (then each permuted lane is masked by dY).
typedef struct {
    __mmask16 load[QF_MAX_BLOCKS][4];
    __mmask16 output[QF_MAX_BLOCKS];
} gradient_row_masks;

static void compute_gradient_row_masks(int stride, ptrdiff_t width, ptrdiff_t pad_left, ptrdiff_t out_width,
                                       gradient_row_masks* masks) {
    static const int stride1_offsets[4] = {0, 1, 2, 0}, stride2_offsets[4] = {0, 16, 2, 18};
    for (ptrdiff_t block = 0; block * 16 < out_width; ++block) {
        const __mmask16 output = range_mask(16 * block, out_width);
        const ptrdiff_t x0 = stride * 16 * block - pad_left;
        for (int i = 0; i < 4; ++i) {
            const __mmask16 columns = range_mask(x0 + (stride == 1 ? stride1_offsets[i] : stride2_offsets[i]), width);
            masks->load[block][i] = stride == 1 ? (__mmask16)(columns & output) : columns;
        }
        masks->output[block] = output;
    }
}

static inline QF_AVX512 void load_accumulators(const float* accumulators, __m512 acc[9]) {
    for (int tap = 0; tap < 9; ++tap) acc[tap] = _mm512_loadu_ps(accumulators + 16 * tap);
}

static inline QF_AVX512 void store_accumulators(float* accumulators, const __m512 acc[9]) {
    for (int tap = 0; tap < 9; ++tap) _mm512_storeu_ps(accumulators + 16 * tap, acc[tap]);
}

static inline __attribute__((always_inline)) QF_AVX512 void weight_gradient_stride1_rows(
    const float* input, const float* dy, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
    ptrdiff_t out_height, ptrdiff_t out_width, const gradient_row_masks* masks, float* accumulators) {
    __m512 acc[9];
    load_accumulators(accumulators, acc);
    for (ptrdiff_t oy = 0; oy < out_height; oy += 2) {
        const int pair = oy + 1 < out_height;
        for (ptrdiff_t ox = 0, block = 0; ox < out_width; ox += 16, ++block) {
            const __mmask16 output = masks->output[block];
            const __mmask16 m0 = masks->load[block][0], m1 = masks->load[block][1], m2 = masks->load[block][2];
            const __m512 top = _mm512_maskz_loadu_ps(output, dy + oy * out_width + ox);
            const __m512 bottom = pair ? _mm512_maskz_loadu_ps(output, dy + (oy + 1) * out_width + ox) : _mm512_setzero_ps();
            // Input row r (0..3) meets output row oy with kernel row r and output row oy+1 with kernel row r−1.
            for (int r = 0; r < 4; ++r) {
                const ptrdiff_t y = oy + r - pad_top;
                if (y < 0 || y >= height || (r == 3 && !pair)) continue;
                const float* source = input + y * width + ox - pad_left;
                const __m512 t0 = _mm512_maskz_loadu_ps(m0, source);
                const __m512 t1 = _mm512_maskz_loadu_ps(m1, source + 1);
                const __m512 t2 = _mm512_maskz_loadu_ps(m2, source + 2);
                if (r < 3) {
                    acc[3 * r] = _mm512_fmadd_ps(top, t0, acc[3 * r]);
                    acc[3 * r + 1] = _mm512_fmadd_ps(top, t1, acc[3 * r + 1]);
                    acc[3 * r + 2] = _mm512_fmadd_ps(top, t2, acc[3 * r + 2]);
                }
                if (r > 0) {
                    acc[3 * r - 3] = _mm512_fmadd_ps(bottom, t0, acc[3 * r - 3]);
                    acc[3 * r - 2] = _mm512_fmadd_ps(bottom, t1, acc[3 * r - 2]);
                    acc[3 * r - 1] = _mm512_fmadd_ps(bottom, t2, acc[3 * r - 1]);
                }
            }
        }
    }
    store_accumulators(accumulators, acc);
}

static inline __attribute__((always_inline)) QF_AVX512 void weight_gradient_stride2_rows(
    const float* input, const float* dy, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
    ptrdiff_t out_height, ptrdiff_t out_width, const gradient_row_masks* masks, float* accumulators) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    __m512 acc[9];
    load_accumulators(accumulators, acc);
    for (ptrdiff_t oy = 0; oy < out_height; ++oy) {
        for (ptrdiff_t ox = 0, block = 0; ox < out_width; ox += 16, ++block) {
            const __mmask16 output = masks->output[block];
            const __mmask16 m0 = masks->load[block][0], m16 = masks->load[block][1];
            const __mmask16 m2 = masks->load[block][2], m18 = masks->load[block][3];
            const __m512 d = _mm512_maskz_loadu_ps(output, dy + oy * out_width + ox);
            for (int ky = 0; ky < 3; ++ky) {
                const ptrdiff_t y = 2 * oy + ky - pad_top;
                if (y < 0 || y >= height) continue;
                const float* source = input + y * width + 2 * ox - pad_left;
                const __m512 low = _mm512_maskz_loadu_ps(m0, source), high = _mm512_maskz_loadu_ps(m16, source + 16);
                const __m512 low2 = _mm512_maskz_loadu_ps(m2, source + 2), high2 = _mm512_maskz_loadu_ps(m18, source + 18);
                acc[3 * ky] = _mm512_fmadd_ps(d, _mm512_maskz_permutex2var_ps(output, low, even, high), acc[3 * ky]);
                acc[3 * ky + 1] = _mm512_fmadd_ps(d, _mm512_maskz_permutex2var_ps(output, low, odd, high), acc[3 * ky + 1]);
                acc[3 * ky + 2] = _mm512_fmadd_ps(d, _mm512_maskz_permutex2var_ps(output, low2, even, high2), acc[3 * ky + 2]);
            }
        }
    }
    store_accumulators(accumulators, acc);
}

static int is_flat(int stride, ptrdiff_t height, ptrdiff_t width, ptrdiff_t out_height, ptrdiff_t out_width) {
    return stride == 1 && width < 16 && 16 % width == 0 && out_width == width && out_height == height &&
           height * width <= 64;
}

int qf_fp32_depthwise3x3_backward_avx512_handles(int stride, ptrdiff_t width, ptrdiff_t out_width) {
    return out_width <= 16 * QF_MAX_BLOCKS && (stride == 1 || (width + 31) / 32 <= QF_MAX_BLOCKS);
}

QF_AVX512 void qf_fp32_depthwise3x3_weight_gradient_avx512(const float* input, const float* output_gradient,
                                                          ptrdiff_t first_plane, ptrdiff_t plane_count,
                                                          ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width,
                                                          int stride, ptrdiff_t pad_top, ptrdiff_t pad_left,
                                                          ptrdiff_t out_height, ptrdiff_t out_width,
                                                          float* accumulators) {
    const ptrdiff_t in_plane = height * width, out_plane = out_height * out_width;
    if (!is_flat(stride, height, width, out_height, out_width)) {
        gradient_row_masks masks;
        compute_gradient_row_masks(stride, width, pad_left, out_width, &masks);
        for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
            const float* x = input + (plane - first_plane) * in_plane;
            const float* dy = output_gradient + (plane - first_plane) * out_plane;
            float* a = accumulators + 144 * (plane % channels);
            if (stride == 1) {
                weight_gradient_stride1_rows(x, dy, height, width, pad_top, pad_left, out_height, out_width, &masks, a);
            } else {
                weight_gradient_stride2_rows(x, dy, height, width, pad_top, pad_left, out_height, out_width, &masks, a);
            }
        }
        return;
    }
    // Flat plane of `count` ≤ 64 floats: dY vector v holds flat positions 16v.., and tap (ky, kx) reads the input
    // at q + (ky − pad_top)·width + kx − pad_left where that is inside the plane and in the right column.
    const ptrdiff_t count = in_plane;
    __mmask16 masks[9][4], output[4];
    ptrdiff_t offsets[9];
    for (int v = 0; v < 4; ++v) output[v] = range_mask(16 * v, count);
    flat_plane_tap_masks(count, width, pad_top, pad_left, masks, offsets);
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        const float* x = input + (plane - first_plane) * in_plane;
        const float* dy = output_gradient + (plane - first_plane) * out_plane;
        float* a = accumulators + 144 * (plane % channels);
        __m512 acc[9];
        load_accumulators(a, acc);
        if (count <= 16) {
            const __m512 d = _mm512_maskz_loadu_ps(output[0], dy);
            for (int tap = 0; tap < 9; ++tap) {
                acc[tap] = _mm512_fmadd_ps(d, _mm512_maskz_loadu_ps(masks[tap][0], x + offsets[tap]), acc[tap]);
            }
        } else {
            const __m512 d0 = _mm512_maskz_loadu_ps(output[0], dy), d1 = _mm512_maskz_loadu_ps(output[1], dy + 16);
            const __m512 d2 = _mm512_maskz_loadu_ps(output[2], dy + 32), d3 = _mm512_maskz_loadu_ps(output[3], dy + 48);
            for (int tap = 0; tap < 9; ++tap) {
                const float* at = x + offsets[tap];
                __m512 sum = _mm512_fmadd_ps(d0, _mm512_maskz_loadu_ps(masks[tap][0], at), acc[tap]);
                sum = _mm512_fmadd_ps(d1, _mm512_maskz_loadu_ps(masks[tap][1], at + 16), sum);
                sum = _mm512_fmadd_ps(d2, _mm512_maskz_loadu_ps(masks[tap][2], at + 32), sum);
                acc[tap] = _mm512_fmadd_ps(d3, _mm512_maskz_loadu_ps(masks[tap][3], at + 48), sum);
            }
        }
        store_accumulators(a, acc);
    }
}

// Stride-2 input gradient of small planes (≤ QF_SMALL_VECTORS vectors of 16 flat input positions, e.g. 8×8): rows
// of 8 inputs would fill a quarter of the 32-column row kernel, and its per-row bookkeeping outweighs the
// arithmetic. Instead every vector takes all its terms from one 16-float window of dY (when the geometry allows:
// checked in the plan): tap (ky, kx) is a masked vpermps of that window times w[ky][kx]. On 16×16 planes (16
// vectors, 144 vpermps) this measured slower than the row kernel (1.23 vs 0.88 ms for 64 × 96 planes).
#define QF_SMALL_VECTORS 4
typedef struct {
    ptrdiff_t vectors, window[QF_SMALL_VECTORS];
    __mmask16 window_mask[QF_SMALL_VECTORS], store[QF_SMALL_VECTORS], mask[9][QF_SMALL_VECTORS];
    int index[9][QF_SMALL_VECTORS][16];
} small_stride2_plan;

// 0 when some vector's terms do not fit in one 16-float window of dY.
static int plan_small_stride2(ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
                              ptrdiff_t out_height, ptrdiff_t out_width, small_stride2_plan* plan) {
    const ptrdiff_t count = height * width, out_count = out_height * out_width;
    plan->vectors = (count + 15) / 16;
    if (plan->vectors > QF_SMALL_VECTORS) return 0;
    for (ptrdiff_t v = 0; v < plan->vectors; ++v) {
        // dY flat index of each (tap, lane), −1 where the tap does not reach that input.
        ptrdiff_t source[9][16], low = out_count, high = -1;
        for (int j = 0; j < 16; ++j) {
            const ptrdiff_t q = 16 * v + j, y = q / width, x = q % width;
            for (int tap = 0; tap < 9; ++tap) {
                const ptrdiff_t qy = y + pad_top - tap / 3, qx = x + pad_left - tap % 3;
                source[tap][j] = -1;
                if (q >= count || qy < 0 || qx < 0 || qy % 2 != 0 || qx % 2 != 0) continue;
                if (qy / 2 >= out_height || qx / 2 >= out_width) continue;
                source[tap][j] = (qy / 2) * out_width + qx / 2;
                if (source[tap][j] < low) low = source[tap][j];
                if (source[tap][j] > high) high = source[tap][j];
            }
        }
        if (high >= 0 && high - low >= 16) return 0;
        if (high < 0) low = 0;
        plan->window[v] = low;
        plan->window_mask[v] = range_mask(low, out_count);
        plan->store[v] = range_mask(16 * v, count);
        for (int tap = 0; tap < 9; ++tap) {
            unsigned mask = 0;
            for (int j = 0; j < 16; ++j) {
                plan->index[tap][v][j] = source[tap][j] < 0 ? 0 : (int)(source[tap][j] - low);
                if (source[tap][j] >= 0) mask |= 1u << j;
            }
            plan->mask[tap][v] = (__mmask16)mask;
        }
    }
    return 1;
}

static QF_AVX512 void input_gradient_stride2_small(const float* output_gradient, const float* weights,
                                                   ptrdiff_t first_plane, ptrdiff_t plane_count, ptrdiff_t channels,
                                                   ptrdiff_t in_plane, ptrdiff_t out_plane, float* input_gradient,
                                                   int accumulate, const small_stride2_plan* plan) {
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        const float* dy = output_gradient + (plane - first_plane) * out_plane;
        const float* w = weights + 9 * (plane % channels);
        float* dx = input_gradient + plane * in_plane;
        __m512 weight[9];
        for (int tap = 0; tap < 9; ++tap) weight[tap] = _mm512_set1_ps(w[tap]);
        for (ptrdiff_t v = 0; v < plan->vectors; ++v) {
            const __m512 window = _mm512_maskz_loadu_ps(plan->window_mask[v], dy + plan->window[v]);
            const __mmask16 store = plan->store[v];
            __m512 sum = accumulate ? _mm512_maskz_loadu_ps(store, dx + 16 * v) : _mm512_setzero_ps();
            for (int tap = 0; tap < 9; ++tap) {
                const __m512i index = _mm512_loadu_si512(plan->index[tap][v]);
                sum = _mm512_fmadd_ps(weight[tap], _mm512_maskz_permutexvar_ps(plan->mask[tap][v], index, window), sum);
            }
            _mm512_mask_storeu_ps(dx + 16 * v, store, sum);
        }
    }
}

QF_AVX512 void qf_fp32_depthwise3x3_input_gradient_stride2_avx512(const float* output_gradient, const float* weights,
                                                                 ptrdiff_t first_plane, ptrdiff_t plane_count,
                                                                 ptrdiff_t channels, ptrdiff_t height,
                                                                 ptrdiff_t width, ptrdiff_t pad_top,
                                                                 ptrdiff_t pad_left, ptrdiff_t out_height,
                                                                 ptrdiff_t out_width, float* input_gradient,
                                                                 int accumulate) {
    if (height * width <= 16 * QF_SMALL_VECTORS) {
        small_stride2_plan plan;
        if (plan_small_stride2(height, width, pad_top, pad_left, out_height, out_width, &plan)) {
            input_gradient_stride2_small(output_gradient, weights, first_plane, plane_count, channels,
                                         height * width, out_height * out_width, input_gradient, accumulate, &plan);
            return;
        }
    }
    const ptrdiff_t blocks = (width + 31) / 32;
    // Input column x = 2j + e (e = 0: even lanes, 1: odd lanes) collects the taps kx with x + pad_left − kx even,
    // from dY column ox = j + (e + pad_left − kx)/2: `terms` of (kx, offset) per parity, offset in −1..1.
    int terms[2], term_kx[2][2], term_offset[2][2];
    for (int e = 0; e < 2; ++e) {
        terms[e] = 0;
        for (int kx = 0; kx < 3; ++kx) {
            const int u = e + (int)pad_left - kx;
            if (u % 2 != 0) continue;
            term_kx[e][terms[e]] = kx;
            term_offset[e][terms[e]] = u / 2;
            ++terms[e];
        }
    }
    // Per 32-column block: dY load masks for offsets −1, 0, 1 and the store masks of its two halves.
    __mmask16 load[QF_MAX_BLOCKS][3], store[QF_MAX_BLOCKS][2];
    for (ptrdiff_t block = 0; block < blocks; ++block) {
        for (int offset = -1; offset <= 1; ++offset) load[block][offset + 1] = range_mask(16 * block + offset, out_width);
        store[block][0] = range_mask(32 * block, width);
        store[block][1] = range_mask(32 * block + 16, width);
    }
    const __m512i first_half = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i second_half = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    const ptrdiff_t in_plane = height * width, out_plane = out_height * out_width;
    for (ptrdiff_t plane = first_plane; plane < first_plane + plane_count; ++plane) {
        const float* dy = output_gradient + (plane - first_plane) * out_plane;
        const float* w = weights + 9 * (plane % channels);
        float* dx = input_gradient + plane * in_plane;
        for (ptrdiff_t y = 0; y < height; ++y) {
            // Kernel rows ky with (y + pad_top − ky) even and the dY row it names inside the plane.
            int rows = 0, row_ky[2];
            const float* row_dy[2];
            for (int ky = 0; ky < 3; ++ky) {
                const ptrdiff_t q = y + pad_top - ky;
                if (q < 0 || q % 2 != 0 || q / 2 >= out_height) continue;
                row_ky[rows] = ky;
                row_dy[rows] = dy + (q / 2) * out_width;
                ++rows;
            }
            float* row = dx + y * width;
            for (ptrdiff_t block = 0; block < blocks; ++block) {
                __m512 even = _mm512_setzero_ps(), odd = _mm512_setzero_ps();
                for (int r = 0; r < rows; ++r) {
                    const float* source = row_dy[r] + 16 * block;
                    const float* kernel_row = w + 3 * row_ky[r];
                    for (int t = 0; t < terms[0]; ++t) {
                        const int offset = term_offset[0][t];
                        even = _mm512_fmadd_ps(_mm512_set1_ps(kernel_row[term_kx[0][t]]),
                                               _mm512_maskz_loadu_ps(load[block][offset + 1], source + offset), even);
                    }
                    for (int t = 0; t < terms[1]; ++t) {
                        const int offset = term_offset[1][t];
                        odd = _mm512_fmadd_ps(_mm512_set1_ps(kernel_row[term_kx[1][t]]),
                                              _mm512_maskz_loadu_ps(load[block][offset + 1], source + offset), odd);
                    }
                }
                __m512 low = _mm512_permutex2var_ps(even, first_half, odd);
                __m512 high = _mm512_permutex2var_ps(even, second_half, odd);
                float* target = row + 32 * block;
                if (accumulate) {
                    low = _mm512_add_ps(low, _mm512_maskz_loadu_ps(store[block][0], target));
                    high = _mm512_add_ps(high, _mm512_maskz_loadu_ps(store[block][1], target + 16));
                }
                _mm512_mask_storeu_ps(target, store[block][0], low);
                _mm512_mask_storeu_ps(target + 16, store[block][1], high);
            }
        }
    }
}

#endif
