// u8 × s8 GEMM with AVX-512 VNNI (vpdpbusd): each 32-bit lane accumulates four u8·s8 products at once.
//
// Register tile: 8 rows × 32 columns (two 16-column panels) = 16 zmm accumulators. Per depth group of 4 the
// kernel broadcasts 4 activation bytes of each row to all lanes and multiplies them with the panel's 64 weight
// bytes (16 channels × 4 depths), so the weights of one group are loaded once for 8 rows.
// Cache blocking: rows are taken in blocks of about 128 KiB of A (kept in L2) and, inside a block, each pair of
// panels (k·32 bytes of weights, kept in L1) sweeps over all rows of the block.
#include <string.h>

#include "qf_gemm_layout.h"
#include "qf_requant.h"

#if QF_X86

#define QF_MR 8

// Fully unrolls a loop of constant trip count (see qf_dwconv_simd.c).
#if defined(__clang__)
#define QF_GEMM_UNROLL _Pragma("clang loop unroll(full)")
#else
#define QF_GEMM_UNROLL
#endif

static inline uint32_t qf_load_u32(const uint8_t* p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

// Reads the last, partial depth group (1-3 bytes) without touching memory past the row.
static inline uint32_t qf_load_tail_u32(const uint8_t* p, size_t bytes) {
    // Byte by byte: memcpy with a run-time size is a library call per row (bytes is 1-3).
    uint32_t v = p[0];
    if (bytes > 1) v |= (uint32_t)p[1] << 8;
    if (bytes > 2) v |= (uint32_t)p[2] << 16;
    return v;
}

// One tile of mr ≤ 8 rows and `panels` (1 or 2) panels; columns ≤ 16·panels valid output columns. Depth group
// g of row i is read at a + i·lda + g·group_stride (4 for a plain matrix: groups are consecutive). With
// `scales` (float output: a classifier's logits) row i's outputs are float(acc)·scales[column] at
// float_c + i·ldc instead of requantized bytes at c. `relu`: out->qmin ≥ out->zero_point (qf_requant_hi_relu_avx512);
// `folded`: the packed rounding constants add the zero point (QF_HEADER_ZERO_POINT_FOLDED).
// always_inline with constant `panels`, `group_stride`, `scales`, `relu` and `folded` lets the compiler keep
// acc[][] in registers.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_gemm_tile_avx512vnni(size_t mr, int panels, size_t columns, size_t k, const uint8_t* a, size_t lda,
                        size_t group_stride, const uint8_t* panel0, size_t panel_size, uint8_t* c, size_t ldc,
                        const qf_output_params* out, const float* scales, float* float_c, int relu, int folded) {
    const uint8_t* rows[QF_MR];
    // Rows past mr repeat the last valid row: the work is wasted but needs no branches in the inner loop.
    for (int i = 0; i < QF_MR; i++) rows[i] = a + (i < (int)mr ? (size_t)i : mr - 1) * lda;

    __m512i acc[QF_MR][2];
    for (int p = 0; p < panels; p++) {
        const __m512i bias = _mm512_loadu_si512(panel0 + p * panel_size);
        for (int i = 0; i < QF_MR; i++) acc[i][p] = bias;
    }
    const uint8_t* w0 = panel0 + QF_PANEL_HEADER_BYTES;
    const uint8_t* w1 = w0 + panel_size;
    const size_t full_groups = k / 4;
    for (size_t g = 0; g < full_groups; g++) {
        const __m512i b0 = _mm512_loadu_si512(w0 + g * 64);
        const __m512i b1 = panels > 1 ? _mm512_loadu_si512(w1 + g * 64) : b0;
        for (int i = 0; i < QF_MR; i++) {
            const __m512i x = _mm512_set1_epi32((int32_t)qf_load_u32(rows[i] + g * group_stride));
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
            if (panels > 1) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
        }
    }
    if (k % 4 != 0) {
        const size_t g = full_groups;
        const __m512i b0 = _mm512_loadu_si512(w0 + g * 64);
        const __m512i b1 = panels > 1 ? _mm512_loadu_si512(w1 + g * 64) : b0;
        for (int i = 0; i < QF_MR; i++) {
            const __m512i x = _mm512_set1_epi32((int32_t)qf_load_tail_u32(rows[i] + g * group_stride, k % 4));
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
            if (panels > 1) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
        }
    }

    if (scales) {
        for (int p = 0; p < panels; p++) {
            const size_t valid = columns - (size_t)p * 16 < 16 ? columns - (size_t)p * 16 : 16;
            const __mmask16 store_mask = (__mmask16)((1u << valid) - 1u);
            const __m512 scale = _mm512_maskz_loadu_ps(store_mask, scales + p * 16);
            for (int i = 0; i < QF_MR && i < (int)mr; i++) {
                // cvtdq2ps rounds to nearest even, as Float(Int32) does.
                _mm512_mask_storeu_ps(float_c + (size_t)i * ldc + (size_t)p * 16, store_mask,
                                      _mm512_mul_ps(_mm512_cvtepi32_ps(acc[i][p]), scale));
            }
        }
        return;
    }

    // Epilogue: all 8 rows are requantized (rows past mr repeat the last row and are not stored) in fully unrolled
    // loops, so the accumulators stay in registers; rolled, clang spilled all 16 to the stack and reloaded them.
    // Four vectors at a time are then packed to bytes with saturation (qf_pack_u8_avx512, which adds the zero
    // point), so a narrower output range (ReLU with a non-zero zero point, fewer bits) costs one byte min/max per
    // four vectors. This replaces a min, a max and a vpmovdb per vector (vpmovdb is two slow uops on Zen 4).
    const __m512i zero_point16 = _mm512_set1_epi16((short)out->zero_point);
    const __m512i qmin = _mm512_set1_epi8((char)(uint8_t)out->qmin), qmax = _mm512_set1_epi8((char)(uint8_t)out->qmax);
    const int clamp_min = out->qmin > 0, clamp_max = out->qmax < 255;
    // After the packs, 128-bit lane L holds channels 4L..4L+3 of each of the four packed vectors (one dword each);
    // this dword permutation gathers each vector's 16 channels into one lane: vector k in lane k.
    const __m512i rows_to_lanes = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    // Requantized in place, one panel's constants at a time (both panels' would not fit the registers next to the
    // 16 accumulators); then packed and stored.
    QF_GEMM_UNROLL
    for (int p = 0; p < panels; p++) {
        // The per-channel constants are loaded once per tile and reused for its 8 rows.
        const int32_t* header = (const int32_t*)(panel0 + p * panel_size);
        const size_t row = QF_GEMM_PANEL_COLUMNS;
        const qf_requant_hi constants = {
            .m2 = _mm512_loadu_si512(header + QF_HEADER_M2 * row),
            .m2_odd = _mm512_loadu_si512(header + QF_HEADER_M2_ODD * row),
            .nudge_even = _mm512_loadu_si512(header + QF_HEADER_NUDGE_EVEN * row),
            .nudge_odd = _mm512_loadu_si512(header + QF_HEADER_NUDGE_ODD * row),
            .neg_fix = _mm512_loadu_si512(header + QF_HEADER_NEG_FIX * row),
            .right = _mm512_loadu_si512(header + QF_HEADER_RIGHT_SHIFT * row),
        };
        const __m512i left = _mm512_loadu_si512(header + QF_HEADER_LEFT_SHIFT * row);
        if (_mm512_test_epi32_mask(left, left)) {  // only multipliers ≥ 1 shift left
            QF_GEMM_UNROLL
            for (int i = 0; i < QF_MR; i++) acc[i][p] = _mm512_sllv_epi32(acc[i][p], left);
        }
        QF_GEMM_UNROLL
        for (int i = 0; i < QF_MR; i++) {
            acc[i][p] = relu ? qf_requant_hi_relu_avx512(acc[i][p], &constants) : qf_requant_hi_avx512(acc[i][p], &constants);
        }
    }
    if (panels == 2) {
        // Two rows per pack, so that each row's 32 bytes end up in one 256-bit half: one store per row (a whole
        // 512-bit store for two adjacent rows of a 32-column output) instead of two 128-bit stores and extracts.
        const __mmask32 store_mask = columns < 32 ? (__mmask32)((1u << columns) - 1u) : ~(__mmask32)0;
        const int contiguous = columns == 32 && ldc == 32;
        QF_GEMM_UNROLL
        for (int i = 0; i < QF_MR; i += 2) {
            __m512i bytes = folded ? qf_pack_u8_folded_avx512(acc[i][0], acc[i][1], acc[i + 1][0], acc[i + 1][1])
                                   : qf_pack_u8_avx512(acc[i][0], acc[i][1], acc[i + 1][0], acc[i + 1][1], zero_point16);
            if (clamp_min) bytes = _mm512_max_epu8(bytes, qmin);
            if (clamp_max) bytes = _mm512_min_epu8(bytes, qmax);
            bytes = _mm512_permutexvar_epi32(rows_to_lanes, bytes);
            uint8_t* row_c = c + (size_t)i * ldc;
            const int rows_left = (int)mr - i;
            if (contiguous && rows_left > 1) {
                _mm512_storeu_si512(row_c, bytes);
            } else {
                if (rows_left > 0) _mm256_mask_storeu_epi8(row_c, store_mask, _mm512_castsi512_si256(bytes));
                if (rows_left > 1) _mm256_mask_storeu_epi8(row_c + ldc, store_mask, _mm512_extracti64x4_epi64(bytes, 1));
            }
        }
    } else {
        const __mmask16 store_mask = (__mmask16)((1u << columns) - 1u);
        // 16-column rows right after each other (a 16-channel output): four rows are one 64-byte store.
        const int contiguous = columns == 16 && ldc == 16;
        QF_GEMM_UNROLL
        for (int i0 = 0; i0 < QF_MR; i0 += 4) {
            __m512i bytes = folded ? qf_pack_u8_folded_avx512(acc[i0][0], acc[i0 + 1][0], acc[i0 + 2][0], acc[i0 + 3][0])
                                   : qf_pack_u8_avx512(acc[i0][0], acc[i0 + 1][0], acc[i0 + 2][0], acc[i0 + 3][0],
                                                       zero_point16);
            if (clamp_min) bytes = _mm512_max_epu8(bytes, qmin);
            if (clamp_max) bytes = _mm512_min_epu8(bytes, qmax);
            bytes = _mm512_permutexvar_epi32(rows_to_lanes, bytes);
            uint8_t* row_c = c + (size_t)i0 * ldc;
            const int rows_left = (int)mr - i0;
            if (contiguous && rows_left > 3) {
                _mm512_storeu_si512(row_c, bytes);
            } else {
                if (rows_left > 0) _mm_mask_storeu_epi8(row_c, store_mask, _mm512_castsi512_si128(bytes));
                if (rows_left > 1) _mm_mask_storeu_epi8(row_c + ldc, store_mask, _mm512_extracti32x4_epi32(bytes, 1));
                if (rows_left > 2) _mm_mask_storeu_epi8(row_c + 2 * ldc, store_mask, _mm512_extracti32x4_epi32(bytes, 2));
                if (rows_left > 3) _mm_mask_storeu_epi8(row_c + 3 * ldc, store_mask, _mm512_extracti32x4_epi32(bytes, 3));
            }
        }
    }
}

// The blocked loops over tiles, for both entry points; `relu` and `folded` as in qf_gemm_tile_avx512vnni.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_gemm_blocks_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, size_t group_stride,
                          const void* packed, uint8_t* c, size_t ldc, const qf_output_params* out, const float* scales,
                          float* float_c, int relu, int folded) {
    const size_t panel_size = qf_gemm_u8s8_panel_size(k);
    const size_t panels = (n + QF_GEMM_PANEL_COLUMNS - 1) / QF_GEMM_PANEL_COLUMNS;
    size_t row_block = ((128 * 1024) / (k + 1) / QF_MR) * QF_MR;
    if (row_block < QF_MR) row_block = QF_MR;
    for (size_t m0 = 0; m0 < m; m0 += row_block) {
        const size_t m_end = m0 + row_block < m ? m0 + row_block : m;
        for (size_t p = 0; p < panels; p += 2) {
            const uint8_t* panel = (const uint8_t*)packed + p * panel_size;
            const size_t columns = n - p * QF_GEMM_PANEL_COLUMNS;
            for (size_t i = m0; i < m_end; i += QF_MR) {
                const size_t mr = m_end - i < QF_MR ? m_end - i : QF_MR;
                const size_t offset = i * ldc + p * QF_GEMM_PANEL_COLUMNS;
                uint8_t* tile_c = scales ? NULL : c + offset;
                float* tile_float_c = scales ? float_c + offset : NULL;
                const float* tile_scales = scales ? scales + p * QF_GEMM_PANEL_COLUMNS : NULL;
                if (p + 1 < panels) {
                    qf_gemm_tile_avx512vnni(mr, 2, columns < 32 ? columns : 32, k, a + i * lda, lda, group_stride,
                                            panel, panel_size, tile_c, ldc, out, tile_scales, tile_float_c, relu,
                                            folded);
                } else {
                    qf_gemm_tile_avx512vnni(mr, 1, columns, k, a + i * lda, lda, group_stride, panel, panel_size,
                                            tile_c, ldc, out, tile_scales, tile_float_c, relu, folded);
                }
            }
        }
    }
}

// Each form of the epilogue compiled on its own (literal `relu` and `folded`).
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_gemm_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, size_t group_stride,
                   const void* packed, uint8_t* c, size_t ldc, const qf_output_params* out, const float* scales,
                   float* float_c) {
    if (m == 0 || n == 0) return;
    if (scales) {
        qf_gemm_blocks_avx512vnni(m, n, k, a, lda, group_stride, packed, c, ldc, out, scales, float_c, 0, 0);
        return;
    }
    // Requantized outputs clamped at or above their zero point take the shorter qf_requant_hi_relu_avx512.
    const int relu = out->qmin >= out->zero_point;
    const int folded = ((const int32_t*)packed)[QF_HEADER_ZERO_POINT_FOLDED * QF_GEMM_PANEL_COLUMNS] != 0;
    if (relu && folded) {
        qf_gemm_blocks_avx512vnni(m, n, k, a, lda, group_stride, packed, c, ldc, out, NULL, NULL, 1, 1);
    } else if (relu) {
        qf_gemm_blocks_avx512vnni(m, n, k, a, lda, group_stride, packed, c, ldc, out, NULL, NULL, 1, 0);
    } else if (folded) {
        qf_gemm_blocks_avx512vnni(m, n, k, a, lda, group_stride, packed, c, ldc, out, NULL, NULL, 0, 1);
    } else {
        qf_gemm_blocks_avx512vnni(m, n, k, a, lda, group_stride, packed, c, ldc, out, NULL, NULL, 0, 0);
    }
}

QF_TARGET_AVX512VNNI void qf_gemm_u8s8s32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda,
                                                     const void* packed, uint8_t* c, size_t ldc,
                                                     const qf_output_params* out) {
    qf_gemm_avx512vnni(m, n, k, a, lda, 4, packed, c, ldc, out, NULL, NULL);
}

QF_TARGET_AVX512VNNI void qf_gemm_u8s8f32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda,
                                                     const void* packed, const float* scales, float* c,
                                                     size_t ldc) {
    qf_gemm_avx512vnni(m, n, k, a, lda, 4, packed, NULL, ldc, NULL, scales, c);
}

QF_TARGET_AVX512VNNI void qf_gemm_u8s8s32_grouped_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a,
                                                             size_t lda, size_t group_stride, const void* packed,
                                                             uint8_t* c, size_t ldc, const qf_output_params* out) {
    qf_gemm_avx512vnni(m, n, k, a, lda, group_stride, packed, c, ldc, out, NULL, NULL);
}

#else  // not x86: the symbol exists so the Swift side links; the dispatcher never selects it.
void qf_gemm_u8s8s32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                                uint8_t* c, size_t ldc, const qf_output_params* out) {
    qf_gemm_u8s8s32_scalar(m, n, k, a, lda, packed, c, ldc, out);
}
void qf_gemm_u8s8f32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                                const float* scales, float* c, size_t ldc) {
    qf_gemm_u8s8f32_scalar(m, n, k, a, lda, packed, scales, c, ldc);
}
void qf_gemm_u8s8s32_grouped_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda,
                                        size_t group_stride, const void* packed, uint8_t* c, size_t ldc,
                                        const qf_output_params* out) {
    // Gathers each row's groups into a plain row (k ≤ 64 here: a stem's kernel rows).
    uint8_t row[64];
    for (size_t i = 0; i < m; i++) {
        for (size_t g = 0; g < k / 4; g++) memcpy(row + 4 * g, a + i * lda + g * group_stride, 4);
        qf_gemm_u8s8s32_scalar(1, n, k, row, k, packed, c + i * ldc, ldc, out);
    }
}
#endif
