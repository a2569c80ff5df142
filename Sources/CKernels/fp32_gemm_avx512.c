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


// NT product (see qf_fp32.h): a tile of ROWS rows of A × COLS rows of B keeps ROWS·COLS vector accumulators over
// all segments; per 16-element step it loads ROWS + COLS vectors for ROWS·COLS FMAs (4×4: 8 loads, 16 FMAs, so
// the FMAs bound it, not the loads). The k tail uses masked loads. Each accumulator is reduced once at the end.
static inline QF_AVX512 __attribute__((always_inline)) void nt_tile(
    const int rows, const int cols, ptrdiff_t k, ptrdiff_t segments, const float* a, ptrdiff_t lda,
    ptrdiff_t a_stride, const float* b, ptrdiff_t ldb, ptrdiff_t b_stride, float* c, ptrdiff_t ldc) {
    __m512 acc[4][4];
    for (int r = 0; r < 4; ++r)
        for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
    const ptrdiff_t full = k & ~(ptrdiff_t)15;
    const __mmask16 tail = (__mmask16)((1u << (k & 15)) - 1u);
    for (ptrdiff_t s = 0; s < segments; ++s) {
        const float* as = a + s * a_stride;
        const float* bs = b + s * b_stride;
        for (ptrdiff_t kk = 0; kk < full; kk += 16) {
            __m512 av[4];
            for (int r = 0; r < rows; ++r) av[r] = _mm512_loadu_ps(as + r * lda + kk);
            for (int j = 0; j < cols; ++j) {
                const __m512 bv = _mm512_loadu_ps(bs + j * ldb + kk);
                for (int r = 0; r < rows; ++r) acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
            }
        }
        if (tail) {
            __m512 av[4];
            for (int r = 0; r < rows; ++r) av[r] = _mm512_maskz_loadu_ps(tail, as + r * lda + full);
            for (int j = 0; j < cols; ++j) {
                const __m512 bv = _mm512_maskz_loadu_ps(tail, bs + j * ldb + full);
                for (int r = 0; r < rows; ++r) acc[r][j] = _mm512_fmadd_ps(av[r], bv, acc[r][j]);
            }
        }
    }
    if (rows == 4 && cols == 4) {
        // Full tile: reduce the 16 accumulators together (transposing adds, ~60 instructions instead of ~130 for
        // 16 separate horizontal sums), which matters when k·segments is small (4×4 planes: one step per image).
        __m512 lanes[4];
        for (int r = 0; r < 4; ++r) {
            // Within each 128-bit lane: [Σacc[r][0], Σacc[r][1], Σacc[r][2], Σacc[r][3]] over that lane's 4 floats.
            const __m512 a01 = _mm512_add_ps(_mm512_unpacklo_ps(acc[r][0], acc[r][1]), _mm512_unpackhi_ps(acc[r][0], acc[r][1]));
            const __m512 a23 = _mm512_add_ps(_mm512_unpacklo_ps(acc[r][2], acc[r][3]), _mm512_unpackhi_ps(acc[r][2], acc[r][3]));
            lanes[r] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(a01), _mm512_castps_pd(a23))),
                                     _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(a01), _mm512_castps_pd(a23))));
        }
        // Add the four 128-bit lanes of each row: 128-bit lane r of `sums` ends up holding row r's four sums.
        const __m512 z01 = _mm512_add_ps(_mm512_shuffle_f32x4(lanes[0], lanes[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                         _mm512_shuffle_f32x4(lanes[0], lanes[1], _MM_SHUFFLE(3, 2, 3, 2)));
        const __m512 z23 = _mm512_add_ps(_mm512_shuffle_f32x4(lanes[2], lanes[3], _MM_SHUFFLE(1, 0, 1, 0)),
                                         _mm512_shuffle_f32x4(lanes[2], lanes[3], _MM_SHUFFLE(3, 2, 3, 2)));
        const __m512 sums = _mm512_add_ps(_mm512_shuffle_f32x4(z01, z23, _MM_SHUFFLE(2, 0, 2, 0)),
                                          _mm512_shuffle_f32x4(z01, z23, _MM_SHUFFLE(3, 1, 3, 1)));
        _mm_storeu_ps(c, _mm_add_ps(_mm_loadu_ps(c), _mm512_extractf32x4_ps(sums, 0)));
        _mm_storeu_ps(c + ldc, _mm_add_ps(_mm_loadu_ps(c + ldc), _mm512_extractf32x4_ps(sums, 1)));
        _mm_storeu_ps(c + 2 * ldc, _mm_add_ps(_mm_loadu_ps(c + 2 * ldc), _mm512_extractf32x4_ps(sums, 2)));
        _mm_storeu_ps(c + 3 * ldc, _mm_add_ps(_mm_loadu_ps(c + 3 * ldc), _mm512_extractf32x4_ps(sums, 3)));
        return;
    }
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < cols; ++j) c[r * ldc + j] += _mm512_reduce_add_ps(acc[r][j]);
}

// Edge tiles (m or n not a multiple of 4): run-time sizes, so the accumulators may live on the stack.
static QF_AVX512 __attribute__((noinline)) void nt_tile_edge(int rows, int cols, ptrdiff_t k, ptrdiff_t segments,
                                                             const float* a, ptrdiff_t lda, ptrdiff_t a_stride,
                                                             const float* b, ptrdiff_t ldb, ptrdiff_t b_stride,
                                                             float* c, ptrdiff_t ldc) {
    nt_tile(rows, cols, k, segments, a, lda, a_stride, b, ldb, b_stride, c, ldc);
}

// Loop order: a tile row of A (4 rows × all segments) stays in L1 while the rows of B stream past it from L2;
// the caller bounds `segments` so one block of B fits in L2.
QF_AVX512 void qf_fp32_gemm_nt_avx512(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t segments, const float* a,
                                      ptrdiff_t lda, ptrdiff_t a_stride, const float* b, ptrdiff_t ldb,
                                      ptrdiff_t b_stride, float* c, ptrdiff_t ldc) {
    for (ptrdiff_t i = 0; i < m; i += 4) {
        const int rows = (int)(m - i < 4 ? m - i : 4);
        for (ptrdiff_t j = 0; j < n; j += 4) {
            const int cols = (int)(n - j < 4 ? n - j : 4);
            if (rows == 4 && cols == 4) {
                nt_tile(4, 4, k, segments, a + i * lda, lda, a_stride, b + j * ldb, ldb, b_stride, c + i * ldc + j, ldc);
            } else {
                nt_tile_edge(rows, cols, k, segments, a + i * lda, lda, a_stride, b + j * ldb, ldb, b_stride,
                             c + i * ldc + j, ldc);
            }
        }
    }
}

#endif
