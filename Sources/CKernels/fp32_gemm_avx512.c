// FP32 GEMM micro-kernel for AVX-512F + FMA.
//
// Register blocking: 8 rows × 32 columns = 16 zmm accumulators (2 per row). Per depth step the kernel loads two
// B vectors (the packed panel row, 64-byte aligned) and broadcasts 8 A values from the packed panel, so it issues
// 16 FMAs per 10 loads — enough independent chains (16) to cover the FMA latency on two FMA pipes, and 8 rows keep
// every MobileNet channel count (multiples of 8) free of padded rows. A tile with ≤ 16 valid columns (4×4 and
// other narrow planes) runs a one-vector version so no FMA is spent on padding. Partial tiles load B and store C
// through AVX-512 masks, so the tail costs nothing extra and B can also be read in place, unpacked (see
// fp32_gemm.c for when).
#include "qf_fp32.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define QF_AVX512 __attribute__((target("avx512f,fma")))

static inline QF_AVX512 __m512 finish(__m512 value, const float* c, __mmask16 mask, int load_c,
                                      const qf_fp32_epilogue* epilogue, int row) {
    if (load_c) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, c));
    if (epilogue) {
        if (epilogue->bias) value = _mm512_add_ps(value, _mm512_set1_ps(epilogue->bias[row]));
        if (epilogue->clamp) {
            // vmaxps/vminps return the second operand when either is NaN: NaN passes through.
            value = _mm512_max_ps(_mm512_set1_ps(epilogue->minimum), value);
            value = _mm512_min_ps(_mm512_set1_ps(epilogue->maximum), value);
        }
    }
    return value;
}

static inline QF_AVX512 __mmask16 column_mask(int columns) {
    return columns >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << columns) - 1u);
}

// Columns ≤ 16: one accumulator per row; the packed panel is still 32 wide.
static QF_AVX512 void tile_8x16(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c,
                                ptrdiff_t ldc, int rows, int columns, int load_c, const qf_fp32_epilogue* epilogue) {
    const __mmask16 mask = column_mask(columns);
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps(), c3 = _mm512_setzero_ps();
    __m512 c4 = _mm512_setzero_ps(), c5 = _mm512_setzero_ps(), c6 = _mm512_setzero_ps(), c7 = _mm512_setzero_ps();
    for (ptrdiff_t kk = 0; kk < depth; ++kk) {
        const __m512 b0 = _mm512_maskz_loadu_ps(mask, b);
        c0 = _mm512_fmadd_ps(_mm512_set1_ps(a[0]), b0, c0);
        c1 = _mm512_fmadd_ps(_mm512_set1_ps(a[1]), b0, c1);
        c2 = _mm512_fmadd_ps(_mm512_set1_ps(a[2]), b0, c2);
        c3 = _mm512_fmadd_ps(_mm512_set1_ps(a[3]), b0, c3);
        c4 = _mm512_fmadd_ps(_mm512_set1_ps(a[4]), b0, c4);
        c5 = _mm512_fmadd_ps(_mm512_set1_ps(a[5]), b0, c5);
        c6 = _mm512_fmadd_ps(_mm512_set1_ps(a[6]), b0, c6);
        c7 = _mm512_fmadd_ps(_mm512_set1_ps(a[7]), b0, c7);
        a += 8;
        b += ldb;
    }
#define QF_STORE_ROW(r, acc)                                                                                    \
    if (rows > r) {                                                                                             \
        float* row = c + (r) * ldc;                                                                             \
        _mm512_mask_storeu_ps(row, mask, finish(acc, row, mask, load_c, epilogue, r));                          \
    }
    QF_STORE_ROW(0, c0) QF_STORE_ROW(1, c1) QF_STORE_ROW(2, c2) QF_STORE_ROW(3, c3)
    QF_STORE_ROW(4, c4) QF_STORE_ROW(5, c5) QF_STORE_ROW(6, c6) QF_STORE_ROW(7, c7)
#undef QF_STORE_ROW
}

QF_AVX512 void qf_fp32_gemm_tile_avx512(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c,
                                        ptrdiff_t ldc, int rows, int columns, int load_c,
                                        const qf_fp32_epilogue* epilogue) {
    if (columns <= 16) {
        tile_8x16(depth, a, b, ldb, c, ldc, rows, columns, load_c, epilogue);
        return;
    }
    const __mmask16 mask_b = column_mask(columns - 16);
    __m512 c0a = _mm512_setzero_ps(), c0b = _mm512_setzero_ps(), c1a = _mm512_setzero_ps(), c1b = _mm512_setzero_ps();
    __m512 c2a = _mm512_setzero_ps(), c2b = _mm512_setzero_ps(), c3a = _mm512_setzero_ps(), c3b = _mm512_setzero_ps();
    __m512 c4a = _mm512_setzero_ps(), c4b = _mm512_setzero_ps(), c5a = _mm512_setzero_ps(), c5b = _mm512_setzero_ps();
    __m512 c6a = _mm512_setzero_ps(), c6b = _mm512_setzero_ps(), c7a = _mm512_setzero_ps(), c7b = _mm512_setzero_ps();
    for (ptrdiff_t kk = 0; kk < depth; ++kk) {
        // Unaligned/masked loads: B may be read unpacked (then columns past the matrix are masked off).
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_maskz_loadu_ps(mask_b, b + 16);
        __m512 av;
        av = _mm512_set1_ps(a[0]); c0a = _mm512_fmadd_ps(av, b0, c0a); c0b = _mm512_fmadd_ps(av, b1, c0b);
        av = _mm512_set1_ps(a[1]); c1a = _mm512_fmadd_ps(av, b0, c1a); c1b = _mm512_fmadd_ps(av, b1, c1b);
        av = _mm512_set1_ps(a[2]); c2a = _mm512_fmadd_ps(av, b0, c2a); c2b = _mm512_fmadd_ps(av, b1, c2b);
        av = _mm512_set1_ps(a[3]); c3a = _mm512_fmadd_ps(av, b0, c3a); c3b = _mm512_fmadd_ps(av, b1, c3b);
        av = _mm512_set1_ps(a[4]); c4a = _mm512_fmadd_ps(av, b0, c4a); c4b = _mm512_fmadd_ps(av, b1, c4b);
        av = _mm512_set1_ps(a[5]); c5a = _mm512_fmadd_ps(av, b0, c5a); c5b = _mm512_fmadd_ps(av, b1, c5b);
        av = _mm512_set1_ps(a[6]); c6a = _mm512_fmadd_ps(av, b0, c6a); c6b = _mm512_fmadd_ps(av, b1, c6b);
        av = _mm512_set1_ps(a[7]); c7a = _mm512_fmadd_ps(av, b0, c7a); c7b = _mm512_fmadd_ps(av, b1, c7b);
        a += 8;
        b += ldb;
    }
    const __mmask16 mask_a = 0xFFFF;
#define QF_STORE_ROW(r, acc_a, acc_b)                                                                           \
    if (rows > r) {                                                                                             \
        float* row = c + (r) * ldc;                                                                             \
        _mm512_storeu_ps(row, finish(acc_a, row, mask_a, load_c, epilogue, r));                                 \
        _mm512_mask_storeu_ps(row + 16, mask_b, finish(acc_b, row + 16, mask_b, load_c, epilogue, r));          \
    }
    QF_STORE_ROW(0, c0a, c0b) QF_STORE_ROW(1, c1a, c1b) QF_STORE_ROW(2, c2a, c2b) QF_STORE_ROW(3, c3a, c3b)
    QF_STORE_ROW(4, c4a, c4b) QF_STORE_ROW(5, c5a, c5b) QF_STORE_ROW(6, c6a, c6b) QF_STORE_ROW(7, c7a, c7b)
#undef QF_STORE_ROW
}

#endif
