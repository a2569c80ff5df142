// u8 × s8 GEMM with AVX2. There is no vpdpbusd, and vpmaddubsw (u8·s8 pairs into saturating int16) would clip
// 255·127·2 = 64,770 > 32,767, so both operands are widened to int16 and multiplied with vpmaddwd, which sums
// pairs into exact int32. The packed weights are the same as for VNNI: one 32-byte load holds 8 channels × 4
// depths; sign-extending each 16-byte half gives 4 channels × 4 depths as int16, and vpmaddwd against the 4
// broadcast activations leaves per channel two partial sums (depths 0+1, 2+3), added pairwise in the epilogue.
//
// Register tile: 4 rows × 8 columns = 8 accumulators (two per row), 2 weight registers, 1 activation register.
#include <string.h>

#include "qf_gemm_layout.h"
#include "qf_requant.h"

#if QF_X86

#define QF_MR 4

static inline uint32_t qf_load_u32(const uint8_t* p) {
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t qf_load_tail_u32(const uint8_t* p, size_t bytes) {
    // Byte by byte: memcpy with a run-time size is a library call per row (bytes is 1-3).
    uint32_t v = p[0];
    if (bytes > 1) v |= (uint32_t)p[1] << 8;
    if (bytes > 2) v |= (uint32_t)p[2] << 16;
    return v;
}

// 4 activation bytes → [x0 x1 x2 x3] as int16, repeated 4 times across the register.
QF_TARGET_AVX2 static inline __m256i qf_broadcast_u8x4_as_i16(uint32_t bytes) {
    return _mm256_cvtepu8_epi16(_mm_set1_epi32((int32_t)bytes));
}

// mr ≤ 4 rows, 8 columns starting at byte offset `half` (0 or 32) of every weight group of the panel.
QF_TARGET_AVX2 static inline __attribute__((always_inline)) void
qf_gemm_tile_avx2(size_t mr, size_t columns, size_t k, const uint8_t* a, size_t lda, const uint8_t* panel,
                  size_t half, uint8_t* c, size_t ldc, const qf_output_params* out) {
    const uint8_t* rows[QF_MR];
    for (int i = 0; i < QF_MR; i++) rows[i] = a + (i < (int)mr ? (size_t)i : mr - 1) * lda;
    __m256i acc_lo[QF_MR], acc_hi[QF_MR];  // channels 0-3 and 4-7 of the half panel, two partial sums each
    for (int i = 0; i < QF_MR; i++) acc_lo[i] = acc_hi[i] = _mm256_setzero_si256();

    const uint8_t* w = panel + QF_PANEL_HEADER_BYTES + half;
    const size_t groups = qf_gemm_depth_groups(k);
    for (size_t g = 0; g < groups; g++) {
        const __m256i w_lo = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + g * 64)));
        const __m256i w_hi = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(w + g * 64 + 16)));
        const int partial = g * 4 + 4 > k;
        for (int i = 0; i < QF_MR; i++) {
            const uint32_t bytes = partial ? qf_load_tail_u32(rows[i] + g * 4, k - g * 4)
                                           : qf_load_u32(rows[i] + g * 4);
            const __m256i x = qf_broadcast_u8x4_as_i16(bytes);
            acc_lo[i] = _mm256_add_epi32(acc_lo[i], _mm256_madd_epi16(x, w_lo));
            acc_hi[i] = _mm256_add_epi32(acc_hi[i], _mm256_madd_epi16(x, w_hi));
        }
    }

    const int32_t* header = (const int32_t*)panel;
    const size_t lane0 = half / 4;  // first channel of this half panel
    const __m256i bias = _mm256_loadu_si256((const __m256i*)(header + QF_HEADER_BIAS * 16 + lane0));
    const __m256i mult = _mm256_loadu_si256((const __m256i*)(header + QF_HEADER_MULTIPLIER * 16 + lane0));
    const __m256i left = _mm256_loadu_si256((const __m256i*)(header + QF_HEADER_LEFT_SHIFT * 16 + lane0));
    const __m256i right = _mm256_loadu_si256((const __m256i*)(header + QF_HEADER_RIGHT_SHIFT * 16 + lane0));
    const __m256i zero_point = _mm256_set1_epi32(out->zero_point);
    const __m256i lo = _mm256_set1_epi32(out->qmin - out->zero_point);
    const __m256i hi = _mm256_set1_epi32(out->qmax - out->zero_point);
    for (int i = 0; i < QF_MR; i++) {
        if (i >= (int)mr) break;
        // hadd within 128-bit lanes gives channels [0 1 4 5 | 2 3 6 7]; the 64-bit permute restores 0..7.
        __m256i sums = _mm256_permute4x64_epi64(_mm256_hadd_epi32(acc_lo[i], acc_hi[i]), 0xD8);
        sums = _mm256_add_epi32(sums, bias);
        const __m128i bytes = qf_narrow_u8_avx2(qf_requantize_avx2(sums, mult, left, right, lo, hi, zero_point));
        uint8_t* dst = c + (size_t)i * ldc;
        if (columns >= 8) {
            _mm_storel_epi64((__m128i*)dst, bytes);
        } else {
            uint8_t tmp[16];
            _mm_storeu_si128((__m128i*)tmp, bytes);
            memcpy(dst, tmp, columns);
        }
    }
}

QF_TARGET_AVX2 void qf_gemm_u8s8s32_avx2(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda,
                                         const void* packed, uint8_t* c, size_t ldc,
                                         const qf_output_params* out) {
    if (m == 0 || n == 0) return;
    const size_t panel_size = qf_gemm_u8s8_panel_size(k);
    const size_t halves = (n + 7) / 8;
    size_t row_block = ((128 * 1024) / (k + 1) / QF_MR) * QF_MR;
    if (row_block < QF_MR) row_block = QF_MR;
    for (size_t m0 = 0; m0 < m; m0 += row_block) {
        const size_t m_end = m0 + row_block < m ? m0 + row_block : m;
        for (size_t h = 0; h < halves; h++) {
            const uint8_t* panel = (const uint8_t*)packed + (h / 2) * panel_size;
            const size_t columns = n - h * 8 < 8 ? n - h * 8 : 8;
            for (size_t i = m0; i < m_end; i += QF_MR) {
                const size_t mr = m_end - i < QF_MR ? m_end - i : QF_MR;
                qf_gemm_tile_avx2(mr, columns, k, a + i * lda, lda, panel, (h % 2) * 32, c + i * ldc + h * 8, ldc,
                                  out);
            }
        }
    }
}

#else
void qf_gemm_u8s8s32_avx2(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                          uint8_t* c, size_t ldc, const qf_output_params* out) {
    qf_gemm_u8s8s32_scalar(m, n, k, a, lda, packed, c, ldc, out);
}
#endif
