// FP32 GEMM driver: CPU dispatch, A packing, and the GotoBLAS-style loop nest around the per-ISA micro-kernels.
//
// Loop nest (single thread; Swift's GEMM splits rows or columns over threads before calling in here):
//   for each depth block (≤ QF_FP32_DEPTH_BLOCK, blocks of equal size so k = 288 is one block, not 256 + 32)
//     for each column panel of B (column_tile wide)
//       pack the panel (depth block × column_tile, zero-padded) into a 64-byte aligned stack buffer, ≤ 40 KiB,
//       which stays in L1 while
//       for each row panel of packed A (row_tile tall; the A slice of one depth block is streamed from L2)
//         micro-kernel: C tile (+)= A panel · B panel, epilogue on the last depth block.
// A is packed once by the caller (convolution weights at prepare time), B panel by panel here, so a B panel is
// read from memory once per depth block and reused by every row panel.
#include <string.h>

#include "qf_fp32.h"

#define QF_FP32_DEPTH_BLOCK 320
#define QF_FP32_MAX_COLUMN_TILE 32
#ifndef QF_FP32_UNPACKED_B_ROWS
#define QF_FP32_UNPACKED_B_ROWS 96
#endif
// With `stream_b` (see gemm_loops): the unpacked limit, and how many column panels ahead B's rows are prefetched.
#define QF_FP32_STREAMED_UNPACKED_B_ROWS 32
#define QF_FP32_PREFETCH_PANELS 2

static int detect_isa(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return QF_FP32_ISA_AVX512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return QF_FP32_ISA_AVX2;
#endif
    return QF_FP32_ISA_PORTABLE;
}

int qf_fp32_best_isa(void) {
    // A benign race: every thread computes the same value.
    static volatile int cached = -1;
    int isa = cached;
    if (isa < 0) {
        isa = detect_isa();
        cached = isa;
    }
    return isa;
}

int qf_fp32_isa_supported(int isa) {
    return isa >= QF_FP32_ISA_PORTABLE && isa <= qf_fp32_best_isa();
}

int qf_fp32_gemm_row_tile(int isa) {
    switch (isa) {
    case QF_FP32_ISA_AVX512: return 8;
    case QF_FP32_ISA_AVX2: return 6;
    default: return 6;
    }
}

int qf_fp32_gemm_column_tile(int isa) {
    switch (isa) {
    case QF_FP32_ISA_AVX512: return 32;
    case QF_FP32_ISA_AVX2: return 16;
    default: return 8;
    }
}

size_t qf_fp32_packed_a_size(ptrdiff_t rows, ptrdiff_t depth, int row_tile) {
    ptrdiff_t panels = (rows + row_tile - 1) / row_tile;
    return (size_t)(panels * row_tile * depth);
}

void qf_fp32_pack_a(ptrdiff_t rows, ptrdiff_t depth, const float* a, ptrdiff_t lda, int transposed, int row_tile,
                    float* packed) {
    for (ptrdiff_t panel = 0; panel * row_tile < rows; ++panel) {
        ptrdiff_t first = panel * row_tile;
        ptrdiff_t height = rows - first < row_tile ? rows - first : row_tile;
        float* destination = packed + first * depth;
        if (height < row_tile) memset(destination, 0, sizeof(float) * (size_t)(row_tile * depth));
        for (ptrdiff_t r = 0; r < height; ++r) {
            if (transposed) {
                const float* source = a + first + r;
                for (ptrdiff_t kk = 0; kk < depth; ++kk) destination[kk * row_tile + r] = source[kk * lda];
            } else {
                const float* source = a + (first + r) * lda;
                for (ptrdiff_t kk = 0; kk < depth; ++kk) destination[kk * row_tile + r] = source[kk];
            }
        }
    }
}

// B[k0 ..< k0+depth, j0 ..< j0+width] → depth rows of `tile` floats (zero past `width`). `tile` is a constant
// at each call site (always inlined), so the row copies become a few vector moves rather than memcpy calls,
// which matters: with K = 96 and 32 panels per plane, called memcpys cost more than the FMAs of a 16-row GEMM.
//
// `prefetch`: also prefetch the same rows of the panel QF_FP32_PREFETCH_PANELS ahead (past the end of a row that
// lands in the next row, or past B: prefetches never fault).
static inline __attribute__((always_inline)) void pack_b_panel_tile(const float* b, ptrdiff_t ldb, int transposed,
                                                                    ptrdiff_t k0, ptrdiff_t depth, ptrdiff_t j0,
                                                                    int width, const int tile, int prefetch,
                                                                    float* destination) {
    if (!transposed) {
        const float* source = b + k0 * ldb + j0;
        if (width == tile && prefetch) {
            const float* ahead = source + QF_FP32_PREFETCH_PANELS * tile;
            for (ptrdiff_t kk = 0; kk < depth; ++kk) {
                __builtin_prefetch(ahead + kk * ldb);
                if (tile > 16) __builtin_prefetch(ahead + kk * ldb + 16);
                memcpy(destination + kk * tile, source + kk * ldb, sizeof(float) * (size_t)tile);
            }
        } else if (width == tile) {
            for (ptrdiff_t kk = 0; kk < depth; ++kk) {
                memcpy(destination + kk * tile, source + kk * ldb, sizeof(float) * (size_t)tile);
            }
        } else {
            for (ptrdiff_t kk = 0; kk < depth; ++kk) {
                float* row = destination + kk * tile;
                const float* from = source + kk * ldb;
                for (int j = 0; j < tile; ++j) row[j] = j < width ? from[j] : 0.0f;
            }
        }
        return;
    }
    // Bᵀ is stored n × k: read each column of B contiguously along k and scatter it into the panel.
    if (width < tile) memset(destination, 0, sizeof(float) * (size_t)(depth * tile));
    for (int j = 0; j < width; ++j) {
        const float* source = b + (j0 + j) * ldb + k0;
        for (ptrdiff_t kk = 0; kk < depth; ++kk) destination[kk * tile + j] = source[kk];
    }
}

static float apply_epilogue(float value, ptrdiff_t row, const qf_fp32_epilogue* epilogue) {
    if (!epilogue) return value;
    if (epilogue->bias) value += epilogue->bias[row];
    if (epilogue->clamp) {
        value = value < epilogue->minimum ? epilogue->minimum : value;
        value = value > epilogue->maximum ? epilogue->maximum : value;
    }
    return value;
}

// The loop nest, inlined into one copy per ISA (below) so B packing uses that ISA's vector moves: packing runs in
// the driver and took a third as long as the micro-kernels when compiled with baseline SSE moves.
//
// `unpacked_b_rows`: when m fits in that many rows and B is not transposed, the micro-kernel reads B in place (row
// stride ldb) instead of a packed copy: with one or two row panels a packed panel is reused at most twice, so the
// copy (which waits on B's strided rows just the same) costs more than it saves. Only the AVX-512 kernel supports
// it (masked loads for the last, partial panel); 0 disables.
//
// `stream_b`: B comes from memory, not from cache (training: a batch of 32×32 activations is tens of MB). Then B's
// rows are too many separate streams for the hardware prefetcher (which also stops at every 4 KiB page, and a
// 32×32 plane is one page), so the rows of the panel QF_FP32_PREFETCH_PANELS ahead are prefetched (into L2 when
// read unpacked); and B is read unpacked only up to QF_FP32_STREAMED_UNPACKED_B_ROWS rows: with ldb = 1024 floats
// the rows of an unpacked panel are 4 KiB apart and share the same few L1 sets, so each of many row panels fetches
// them again. Measured on one thread over 64 images of a 32×32 layer from memory: m = 96, k = 16 at 17 GMAC/s
// unpacked against 24-27 packed with prefetch; m = 16, k = 96 at 16 unpacked against 20-24 with the prefetch. From L2
// (the float engine's batch chunks) the old choice is as fast or faster, so it stays the default.
static inline __attribute__((always_inline)) void gemm_loops(
    qf_fp32_gemm_tile_fn tile, const int row_tile, const int column_tile, const int unpacked_b_rows, ptrdiff_t m,
    ptrdiff_t n, ptrdiff_t k, const float* packed_a, const float* b, ptrdiff_t ldb, int transpose_b, float* c,
    ptrdiff_t ldc, int accumulate, const qf_fp32_epilogue* epilogue, int stream_b) {
    const int unpacked_limit =
        stream_b && unpacked_b_rows > QF_FP32_STREAMED_UNPACKED_B_ROWS ? QF_FP32_STREAMED_UNPACKED_B_ROWS : unpacked_b_rows;
    const int unpacked = !transpose_b && m <= unpacked_limit;
    float packed_b[QF_FP32_DEPTH_BLOCK * QF_FP32_MAX_COLUMN_TILE] __attribute__((aligned(64)));
    const ptrdiff_t blocks = (k + QF_FP32_DEPTH_BLOCK - 1) / QF_FP32_DEPTH_BLOCK;
    const ptrdiff_t nominal_depth = (k + blocks - 1) / blocks;
    for (ptrdiff_t pc = 0; pc < k; pc += nominal_depth) {
        const ptrdiff_t kc = k - pc < nominal_depth ? k - pc : nominal_depth;
        const int last_block = pc + kc == k;
        const int load_c = accumulate || pc > 0;
        for (ptrdiff_t jr = 0; jr < n; jr += column_tile) {
            const int nr = (int)(n - jr < column_tile ? n - jr : column_tile);
            const float* panel = b + pc * ldb + jr;
            ptrdiff_t panel_stride = ldb;
            if (unpacked && stream_b && jr + QF_FP32_PREFETCH_PANELS * column_tile < n) {
                const float* ahead = panel + QF_FP32_PREFETCH_PANELS * column_tile;
                for (ptrdiff_t kk = 0; kk < kc; ++kk) {
                    __builtin_prefetch(ahead + kk * ldb, 0, 2);
                    __builtin_prefetch(ahead + kk * ldb + 16, 0, 2);
                }
            }
            if (!unpacked) {
                pack_b_panel_tile(b, ldb, transpose_b, pc, kc, jr, nr, column_tile, stream_b, packed_b);
                panel = packed_b;
                panel_stride = column_tile;
            }
            for (ptrdiff_t ir = 0; ir < m; ir += row_tile) {
                const int mr = (int)(m - ir < row_tile ? m - ir : row_tile);
                qf_fp32_epilogue shifted;
                const qf_fp32_epilogue* tile_epilogue = NULL;
                if (last_block && epilogue) {
                    shifted = *epilogue;
                    if (shifted.bias) shifted.bias += ir;
                    tile_epilogue = &shifted;
                }
                tile(kc, packed_a + ir * k + pc * row_tile, panel, panel_stride, c + ir * ldc + jr, ldc, mr, nr,
                     load_c, tile_epilogue);
            }
        }
    }
}

#define QF_GEMM_LOOP_PARAMETERS                                                                                 \
    ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float *packed_a, const float *b, ptrdiff_t ldb, int transpose_b, \
        float *c, ptrdiff_t ldc, int accumulate, const qf_fp32_epilogue *epilogue, int stream_b
#define QF_GEMM_LOOP_ARGUMENTS m, n, k, packed_a, b, ldb, transpose_b, c, ldc, accumulate, epilogue, stream_b

static void gemm_portable(QF_GEMM_LOOP_PARAMETERS) {
    gemm_loops(qf_fp32_gemm_tile_portable, 6, 8, 0, QF_GEMM_LOOP_ARGUMENTS);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) static void gemm_avx2(QF_GEMM_LOOP_PARAMETERS) {
    gemm_loops(qf_fp32_gemm_tile_avx2, 6, 16, 0, QF_GEMM_LOOP_ARGUMENTS);
}
__attribute__((target("avx512f,fma"))) static void gemm_avx512(QF_GEMM_LOOP_PARAMETERS) {
    gemm_loops(qf_fp32_gemm_tile_avx512, 8, 32, QF_FP32_UNPACKED_B_ROWS, QF_GEMM_LOOP_ARGUMENTS);
}
#endif

void qf_fp32_gemm(int isa, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* packed_a, const float* b,
                  ptrdiff_t ldb, int transpose_b, float* c, ptrdiff_t ldc, int accumulate,
                  const qf_fp32_epilogue* epilogue, int stream_b) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        for (ptrdiff_t i = 0; i < m; ++i) {
            for (ptrdiff_t j = 0; j < n; ++j) c[i * ldc + j] = apply_epilogue(accumulate ? c[i * ldc + j] : 0.0f, i, epilogue);
        }
        return;
    }
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        gemm_avx512(QF_GEMM_LOOP_ARGUMENTS);
        return;
    }
    if (isa == QF_FP32_ISA_AVX2) {
        gemm_avx2(QF_GEMM_LOOP_ARGUMENTS);
        return;
    }
#endif
    (void)isa;
    gemm_portable(QF_GEMM_LOOP_ARGUMENTS);
}

// Portable (and AVX2) version of the NT product: plain dot products, for correctness on every CPU. Callers use it
// only off the AVX-512 path's hot loop (Swift keeps the packed GEMM for weight gradients there).
static void gemm_nt_scalar(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t segments, const float* a, ptrdiff_t lda,
                           ptrdiff_t a_stride, const float* b, ptrdiff_t ldb, ptrdiff_t b_stride, float* c,
                           ptrdiff_t ldc) {
    for (ptrdiff_t i = 0; i < m; ++i) {
        for (ptrdiff_t j = 0; j < n; ++j) {
            float total = 0.0f;
            for (ptrdiff_t s = 0; s < segments; ++s) {
                const float* row_a = a + s * a_stride + i * lda;
                const float* row_b = b + s * b_stride + j * ldb;
                for (ptrdiff_t kk = 0; kk < k; ++kk) total += row_a[kk] * row_b[kk];
            }
            c[i * ldc + j] += total;
        }
    }
}

void qf_fp32_gemm_nt(int isa, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t segments, const float* a,
                     ptrdiff_t lda, ptrdiff_t a_stride, const float* b, ptrdiff_t ldb, ptrdiff_t b_stride, float* c,
                     ptrdiff_t ldc) {
    if (m <= 0 || n <= 0 || k <= 0 || segments <= 0) return;
#if defined(__x86_64__) || defined(__i386__)
    if (isa == QF_FP32_ISA_AVX512) {
        qf_fp32_gemm_nt_avx512(m, n, k, segments, a, lda, a_stride, b, ldb, b_stride, c, ldc);
        return;
    }
#endif
    (void)isa;
    gemm_nt_scalar(m, n, k, segments, a, lda, a_stride, b, ldb, b_stride, c, ldc);
}
