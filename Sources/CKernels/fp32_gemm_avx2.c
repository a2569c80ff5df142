// FP32 GEMM micro-kernel for AVX2 + FMA.
//
// Register blocking: 6 rows × 16 columns = 12 ymm accumulators, plus 2 B vectors and 1 broadcast = 15 of the 16
// ymm registers. Per depth step: 2 B loads (the packed panel row, 64-byte aligned) + 6 broadcasts for 12 FMAs.
// AVX2 has no cheap store masks, so a partial tile goes through a small stack tile and a scalar epilogue.
#include "qf_fp32.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define QF_AVX2 __attribute__((target("avx2,fma")))

static inline QF_AVX2 __m256 finish(__m256 value, const float* c, int load_c, const qf_fp32_epilogue* epilogue,
                                    int row) {
    if (load_c) value = _mm256_add_ps(value, _mm256_loadu_ps(c));
    if (epilogue) {
        if (epilogue->bias) value = _mm256_add_ps(value, _mm256_set1_ps(epilogue->bias[row]));
        if (epilogue->clamp) {
            // vmaxps/vminps return the second operand when either is NaN: NaN passes through.
            value = _mm256_max_ps(_mm256_set1_ps(epilogue->minimum), value);
            value = _mm256_min_ps(_mm256_set1_ps(epilogue->maximum), value);
        }
    }
    return value;
}

QF_AVX2 void qf_fp32_gemm_tile_avx2(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                                    int rows, int columns, int load_c, const qf_fp32_epilogue* epilogue) {
    __m256 c0a = _mm256_setzero_ps(), c0b = _mm256_setzero_ps(), c1a = _mm256_setzero_ps(), c1b = _mm256_setzero_ps();
    __m256 c2a = _mm256_setzero_ps(), c2b = _mm256_setzero_ps(), c3a = _mm256_setzero_ps(), c3b = _mm256_setzero_ps();
    __m256 c4a = _mm256_setzero_ps(), c4b = _mm256_setzero_ps(), c5a = _mm256_setzero_ps(), c5b = _mm256_setzero_ps();
    for (ptrdiff_t kk = 0; kk < depth; ++kk) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 av;
        av = _mm256_broadcast_ss(a + 0); c0a = _mm256_fmadd_ps(av, b0, c0a); c0b = _mm256_fmadd_ps(av, b1, c0b);
        av = _mm256_broadcast_ss(a + 1); c1a = _mm256_fmadd_ps(av, b0, c1a); c1b = _mm256_fmadd_ps(av, b1, c1b);
        av = _mm256_broadcast_ss(a + 2); c2a = _mm256_fmadd_ps(av, b0, c2a); c2b = _mm256_fmadd_ps(av, b1, c2b);
        av = _mm256_broadcast_ss(a + 3); c3a = _mm256_fmadd_ps(av, b0, c3a); c3b = _mm256_fmadd_ps(av, b1, c3b);
        av = _mm256_broadcast_ss(a + 4); c4a = _mm256_fmadd_ps(av, b0, c4a); c4b = _mm256_fmadd_ps(av, b1, c4b);
        av = _mm256_broadcast_ss(a + 5); c5a = _mm256_fmadd_ps(av, b0, c5a); c5b = _mm256_fmadd_ps(av, b1, c5b);
        a += 6;
        b += ldb;
    }
    if (columns == 16) {
#define QF_STORE_ROW(r, acc_a, acc_b)                                                                           \
    if (rows > r) {                                                                                             \
        float* row = c + (r) * ldc;                                                                             \
        _mm256_storeu_ps(row, finish(acc_a, row, load_c, epilogue, r));                                         \
        _mm256_storeu_ps(row + 8, finish(acc_b, row + 8, load_c, epilogue, r));                                 \
    }
        QF_STORE_ROW(0, c0a, c0b) QF_STORE_ROW(1, c1a, c1b) QF_STORE_ROW(2, c2a, c2b)
        QF_STORE_ROW(3, c3a, c3b) QF_STORE_ROW(4, c4a, c4b) QF_STORE_ROW(5, c5a, c5b)
#undef QF_STORE_ROW
        return;
    }
    float tile[6][16] __attribute__((aligned(32)));
    _mm256_store_ps(tile[0], c0a); _mm256_store_ps(tile[0] + 8, c0b);
    _mm256_store_ps(tile[1], c1a); _mm256_store_ps(tile[1] + 8, c1b);
    _mm256_store_ps(tile[2], c2a); _mm256_store_ps(tile[2] + 8, c2b);
    _mm256_store_ps(tile[3], c3a); _mm256_store_ps(tile[3] + 8, c3b);
    _mm256_store_ps(tile[4], c4a); _mm256_store_ps(tile[4] + 8, c4b);
    _mm256_store_ps(tile[5], c5a); _mm256_store_ps(tile[5] + 8, c5b);
    for (int r = 0; r < rows; ++r) {
        float* row = c + r * ldc;
        for (int j = 0; j < columns; ++j) {
            float value = tile[r][j] + (load_c ? row[j] : 0.0f);
            if (epilogue) {
                if (epilogue->bias) value += epilogue->bias[r];
                if (epilogue->clamp) {
                    value = value < epilogue->minimum ? epilogue->minimum : value;
                    value = value > epilogue->maximum ? epilogue->maximum : value;
                }
            }
            row[j] = value;
        }
    }
}

#endif
