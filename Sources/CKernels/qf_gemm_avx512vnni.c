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

static inline uint32_t qf_load_u32(const uint8_t* p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

// Reads the last, partial depth group (1-3 bytes) without touching memory past the row.
static inline uint32_t qf_load_tail_u32(const uint8_t* p, size_t bytes) {
    uint32_t v = 0;
    memcpy(&v, p, bytes);
    return v;
}

// One tile of mr ≤ 8 rows and `panels` (1 or 2) panels; columns ≤ 16·panels valid output columns.
// always_inline with constant `panels` lets the compiler keep acc[][] in registers.
QF_TARGET_AVX512VNNI static inline __attribute__((always_inline)) void
qf_gemm_tile_avx512vnni(size_t mr, int panels, size_t columns, size_t k, const uint8_t* a, size_t lda,
                        const uint8_t* panel0, size_t panel_size, uint8_t* c, size_t ldc,
                        const qf_output_params* out) {
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
            const __m512i x = _mm512_set1_epi32((int32_t)qf_load_u32(rows[i] + g * 4));
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
            if (panels > 1) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
        }
    }
    if (k % 4 != 0) {
        const size_t g = full_groups;
        const __m512i b0 = _mm512_loadu_si512(w0 + g * 64);
        const __m512i b1 = panels > 1 ? _mm512_loadu_si512(w1 + g * 64) : b0;
        for (int i = 0; i < QF_MR; i++) {
            const __m512i x = _mm512_set1_epi32((int32_t)qf_load_tail_u32(rows[i] + g * 4, k % 4));
            acc[i][0] = _mm512_dpbusd_epi32(acc[i][0], x, b0);
            if (panels > 1) acc[i][1] = _mm512_dpbusd_epi32(acc[i][1], x, b1);
        }
    }

    const __m512i zero_point = _mm512_set1_epi32(out->zero_point);
    const __m512i lo = _mm512_set1_epi32(out->qmin - out->zero_point);
    const __m512i hi = _mm512_set1_epi32(out->qmax - out->zero_point);
    for (int p = 0; p < panels; p++) {
        // The per-channel constants are loaded once per tile and reused for its 8 rows.
        const int32_t* header = (const int32_t*)(panel0 + p * panel_size);
        const __m512i m_even = _mm512_loadu_si512(header + QF_HEADER_MULTIPLIER * QF_GEMM_PANEL_COLUMNS);
        const __m512i m_odd = _mm512_loadu_si512(header + QF_HEADER_MULTIPLIER_ODD * QF_GEMM_PANEL_COLUMNS);
        const __m512i left = _mm512_loadu_si512(header + QF_HEADER_LEFT_SHIFT * QF_GEMM_PANEL_COLUMNS);
        const __m512i right = _mm512_loadu_si512(header + QF_HEADER_RIGHT_SHIFT * QF_GEMM_PANEL_COLUMNS);
        const __m512i nudge_even = _mm512_loadu_si512(header + QF_HEADER_NUDGE_EVEN * QF_GEMM_PANEL_COLUMNS);
        const __m512i nudge_odd = _mm512_loadu_si512(header + QF_HEADER_NUDGE_ODD * QF_GEMM_PANEL_COLUMNS);
        const __mmask16 rounds = _mm512_test_epi32_mask(right, right);
        const int shifts_left = _mm512_test_epi32_mask(left, left) != 0;  // only multipliers ≥ 1 shift left
        const size_t valid = columns - (size_t)p * 16 < 16 ? columns - (size_t)p * 16 : 16;
        const __mmask16 store_mask = (__mmask16)((1u << valid) - 1u);
        for (int i = 0; i < QF_MR; i++) {
            if (i >= (int)mr) break;
            __m512i y = acc[i][p];
            if (shifts_left) y = _mm512_sllv_epi32(y, left);
            y = qf_multiply_shift_avx512(y, m_even, m_odd, nudge_even, nudge_odd, right, rounds);
            y = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(y, lo), hi), zero_point);
            _mm_mask_storeu_epi8(c + (size_t)i * ldc + (size_t)p * 16, store_mask, _mm512_cvtepi32_epi8(y));
        }
    }
}

QF_TARGET_AVX512VNNI void qf_gemm_u8s8s32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda,
                                                     const void* packed, uint8_t* c, size_t ldc,
                                                     const qf_output_params* out) {
    if (m == 0 || n == 0) return;
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
                if (p + 1 < panels) {
                    qf_gemm_tile_avx512vnni(mr, 2, columns < 32 ? columns : 32, k, a + i * lda, lda, panel,
                                            panel_size, c + i * ldc + p * QF_GEMM_PANEL_COLUMNS, ldc, out);
                } else {
                    qf_gemm_tile_avx512vnni(mr, 1, columns, k, a + i * lda, lda, panel, panel_size,
                                            c + i * ldc + p * QF_GEMM_PANEL_COLUMNS, ldc, out);
                }
            }
        }
    }
}

#else  // not x86: the symbol exists so the Swift side links; the dispatcher never selects it.
void qf_gemm_u8s8s32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                                uint8_t* c, size_t ldc, const qf_output_params* out) {
    qf_gemm_u8s8s32_scalar(m, n, k, a, lda, packed, c, ldc, out);
}
#endif
