// GEMM weight packing and the portable GEMM kernel. The packed layout is shared by all three ISA versions
// (see qf_kernels.h), so one packed buffer serves whichever path the dispatcher picks.
#include <string.h>

#include "qf_gemm_layout.h"
#include "qf_requant.h"

size_t qf_gemm_u8s8_panel_size(size_t k) {
    return QF_PANEL_HEADER_BYTES + qf_gemm_depth_groups(k) * QF_GEMM_PANEL_COLUMNS * 4;
}

size_t qf_gemm_u8s8_packed_size(size_t n, size_t k) {
    const size_t panels = (n + QF_GEMM_PANEL_COLUMNS - 1) / QF_GEMM_PANEL_COLUMNS;
    return panels * qf_gemm_u8s8_panel_size(k);
}

void qf_gemm_u8s8_pack(size_t n, size_t k, const int8_t* weights, const int32_t* bias, const int32_t* multiplier,
                       const int32_t* shift, int32_t a_zero_point, const qf_output_params* out, void* packed) {
    const size_t panel_size = qf_gemm_u8s8_panel_size(k);
    const size_t panels = (n + QF_GEMM_PANEL_COLUMNS - 1) / QF_GEMM_PANEL_COLUMNS;
    memset(packed, 0, panels * panel_size);
    // The whole layer folds its zero point or none of it does: a kernel call may start at any panel, and both
    // panels of a VNNI tile are packed to bytes together.
    int folded = 1;
    for (size_t col = 0; col < n; col++) {
        folded &= qf_requant_hi_folds_zero_point(shift[col] > 0 ? shift[col] : 0, shift[col] < 0 ? -shift[col] : 0,
                                                 out->zero_point);
    }
    for (size_t p = 0; p < panels; p++) {
        uint8_t* panel = (uint8_t*)packed + p * panel_size;
        int32_t* header = (int32_t*)panel;
        int8_t* w = (int8_t*)(panel + QF_PANEL_HEADER_BYTES);
        for (size_t j = 0; j < QF_GEMM_PANEL_COLUMNS; j++) {
            header[QF_HEADER_ZERO_POINT_FOLDED * QF_GEMM_PANEL_COLUMNS + j] = folded;
        }
        for (size_t j = 0; j < QF_GEMM_PANEL_COLUMNS; j++) {
            const size_t col = p * QF_GEMM_PANEL_COLUMNS + j;
            if (col >= n) break;
            const int8_t* row = weights + col * k;
            int64_t weight_sum = 0;
            for (size_t kk = 0; kk < k; kk++) {
                weight_sum += row[kk];
                // Lane j of depth group kk/4 holds W[col][kk..kk+3] in byte kk%4.
                w[(kk / 4) * QF_GEMM_PANEL_COLUMNS * 4 + j * 4 + (kk % 4)] = row[kk];
            }
            // Σ_k (a - za)·w = Σ_k a·w - za·Σ_k w: the second term is a per-channel constant, folded into the bias.
            const int64_t adjusted = (int64_t)(bias ? bias[col] : 0) - (int64_t)a_zero_point * weight_sum;
            header[QF_HEADER_BIAS * QF_GEMM_PANEL_COLUMNS + j] = (int32_t)adjusted;
            header[QF_HEADER_MULTIPLIER * QF_GEMM_PANEL_COLUMNS + j] = multiplier[col];
            header[QF_HEADER_LEFT_SHIFT * QF_GEMM_PANEL_COLUMNS + j] = shift[col] > 0 ? shift[col] : 0;
            header[QF_HEADER_RIGHT_SHIFT * QF_GEMM_PANEL_COLUMNS + j] = shift[col] < 0 ? -shift[col] : 0;
            // The VNNI epilogue's derived constants.
            const size_t lanes = QF_GEMM_PANEL_COLUMNS;
            qf_requant_hi_set(header + QF_HEADER_M2 * lanes, header + QF_HEADER_M2_ODD * lanes,
                              header + QF_HEADER_NUDGE_EVEN * lanes, header + QF_HEADER_NUDGE_ODD * lanes,
                              header + QF_HEADER_NEG_FIX * lanes, j, multiplier[col], shift[col] < 0 ? -shift[col] : 0,
                              folded ? out->zero_point : 0);
        }
    }
}

// One row of A times one packed panel: acc = bias + Σ_k a[k]·w[k][j] for the panel's 16 columns.
static void qf_gemm_scalar_accumulate(const uint8_t* row, size_t k, const int32_t* header, const int8_t* w,
                                      int32_t acc[QF_GEMM_PANEL_COLUMNS]) {
    memcpy(acc, header + QF_HEADER_BIAS * QF_GEMM_PANEL_COLUMNS, QF_GEMM_PANEL_COLUMNS * sizeof(int32_t));
    const size_t groups = qf_gemm_depth_groups(k);
    for (size_t g = 0; g < groups; g++) {
        const int8_t* wg = w + g * QF_GEMM_PANEL_COLUMNS * 4;
        const size_t k0 = g * 4;
        const size_t depth = k - k0 < 4 ? k - k0 : 4;
        for (size_t d = 0; d < depth; d++) {
            const int32_t x = row[k0 + d];
            for (size_t j = 0; j < QF_GEMM_PANEL_COLUMNS; j++) acc[j] += x * (int32_t)wg[j * 4 + d];
        }
    }
}

// Both scalar GEMMs: every row times every panel, then either the requantized u8 epilogue (`c`, `out`) or the
// float one (`c_float`, `scales`); the other pair is NULL.
static void qf_gemm_scalar(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                           uint8_t* c, size_t ldc, const qf_output_params* out, float* c_float, const float* scales) {
    const size_t panel_size = qf_gemm_u8s8_panel_size(k);
    for (size_t p = 0; p * QF_GEMM_PANEL_COLUMNS < n; p++) {
        const uint8_t* panel = (const uint8_t*)packed + p * panel_size;
        const int32_t* header = (const int32_t*)panel;
        const int8_t* w = (const int8_t*)(panel + QF_PANEL_HEADER_BYTES);
        const size_t first = p * QF_GEMM_PANEL_COLUMNS;
        const size_t columns = n - first < QF_GEMM_PANEL_COLUMNS ? n - first : QF_GEMM_PANEL_COLUMNS;
        for (size_t i = 0; i < m; i++) {
            int32_t acc[QF_GEMM_PANEL_COLUMNS];
            qf_gemm_scalar_accumulate(a + i * lda, k, header, w, acc);
            for (size_t j = 0; j < columns; j++) {
                if (c_float) {
                    c_float[i * ldc + first + j] = (float)acc[j] * scales[first + j];
                } else {
                    c[i * ldc + first + j] = qf_requantize_scalar(acc[j], header[QF_HEADER_MULTIPLIER * QF_GEMM_PANEL_COLUMNS + j],
                                                                  header[QF_HEADER_LEFT_SHIFT * QF_GEMM_PANEL_COLUMNS + j],
                                                                  header[QF_HEADER_RIGHT_SHIFT * QF_GEMM_PANEL_COLUMNS + j], out);
                }
            }
        }
    }
}

void qf_gemm_u8s8s32_scalar(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                            uint8_t* c, size_t ldc, const qf_output_params* out) {
    qf_gemm_scalar(m, n, k, a, lda, packed, c, ldc, out, NULL, NULL);
}

void qf_gemm_u8s8f32_scalar(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                            const float* scales, float* c, size_t ldc) {
    qf_gemm_scalar(m, n, k, a, lda, packed, NULL, ldc, NULL, c, scales);
}
