// Offsets inside one packed GEMM panel (layout documented in qf_kernels.h). Private header.
#ifndef QF_GEMM_LAYOUT_H
#define QF_GEMM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include "qf_kernels.h"

// Rows of the int32 header, each QF_GEMM_PANEL_COLUMNS wide (64 bytes). The last three rows are derived from the
// first four and only save the VNNI epilogue work (qf_multiply_shift_avx512):
//   MULTIPLIER_ODD  lane 2i holds the multiplier of channel 2i+1 (vpmuldq reads the even 32-bit lanes only);
//   NUDGE_EVEN      8 int64: 2^30 + R·2^31 of channels 0, 2, …, 14 with R = (1 << right_shift) >> 1;
//   NUDGE_ODD       8 int64: the same for channels 1, 3, …, 15.
enum {
    QF_HEADER_BIAS = 0,
    QF_HEADER_MULTIPLIER = 1,
    QF_HEADER_LEFT_SHIFT = 2,
    QF_HEADER_RIGHT_SHIFT = 3,
    QF_HEADER_MULTIPLIER_ODD = 4,
    QF_HEADER_NUDGE_EVEN = 5,
    QF_HEADER_NUDGE_ODD = 6,
    QF_HEADER_ROWS = 7
};
#define QF_PANEL_HEADER_BYTES (QF_HEADER_ROWS * QF_GEMM_PANEL_COLUMNS * 4)

// 2^30 + R·2^31 with R = (1 << right_shift) >> 1 (see qf_multiply_shift_avx512).
static inline int64_t qf_nudge_with_rounding(int32_t right_shift) {
    return (INT64_C(1) << 30) + (int64_t)((UINT32_C(1) << right_shift) >> 1) * (INT64_C(1) << 31);
}

// Depth is consumed four bytes at a time (one vpdpbusd lane); a partial last group is zero-padded.
static inline size_t qf_gemm_depth_groups(size_t k) { return (k + 3) / 4; }

#endif
