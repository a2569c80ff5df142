// Portable FP32 GEMM micro-kernel: GCC/Clang vector extensions, no ISA attribute, so it compiles to the build's
// baseline (two SSE2 registers per 8-float vector on x86-64, NEON on arm64).
//
// Register blocking: 6 rows × 8 columns = 6 eight-float accumulators (12 xmm on SSE2), written as separate
// multiply and add (no FMA in the baseline; a fused call would become a libm call per lane).
#include <string.h>

#include "qf_fp32.h"

typedef float qf_float8 __attribute__((vector_size(32)));

void qf_fp32_gemm_tile_portable(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                                int rows, int columns, int load_c, const qf_fp32_epilogue* epilogue) {
    qf_float8 acc[6] = {{0}, {0}, {0}, {0}, {0}, {0}};
    for (ptrdiff_t kk = 0; kk < depth; ++kk) {
        qf_float8 bv;
        memcpy(&bv, b, sizeof(bv));
        acc[0] += a[0] * bv;
        acc[1] += a[1] * bv;
        acc[2] += a[2] * bv;
        acc[3] += a[3] * bv;
        acc[4] += a[4] * bv;
        acc[5] += a[5] * bv;
        a += 6;
        b += ldb;
    }
    for (int r = 0; r < rows; ++r) {
        float* row = c + r * ldc;
        float values[8];
        memcpy(values, &acc[r], sizeof(values));
        for (int j = 0; j < columns; ++j) {
            float value = values[j] + (load_c ? row[j] : 0.0f);
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
