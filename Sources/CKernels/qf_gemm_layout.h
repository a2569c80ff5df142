// Offsets inside one packed GEMM panel (layout documented in qf_kernels.h). Private header.
#ifndef QF_GEMM_LAYOUT_H
#define QF_GEMM_LAYOUT_H

#include <stddef.h>
#include "qf_kernels.h"

// Rows of the int32 header, each QF_GEMM_PANEL_COLUMNS wide (64 bytes). The last two rows are derived from the
// first four and only save the SIMD epilogues work per tile:
//   MULTIPLIER_ODD  lane 2i holds the multiplier of channel 2i+1 (vpmuldq reads the even 32-bit lanes only);
//   ROUNDING        (1 << right_shift) >> 1, the half-unit added before the rounding right shift.
enum {
    QF_HEADER_BIAS = 0,
    QF_HEADER_MULTIPLIER = 1,
    QF_HEADER_LEFT_SHIFT = 2,
    QF_HEADER_RIGHT_SHIFT = 3,
    QF_HEADER_MULTIPLIER_ODD = 4,
    QF_HEADER_ROUNDING = 5,
    QF_HEADER_ROWS = 6
};
#define QF_PANEL_HEADER_BYTES (QF_HEADER_ROWS * QF_GEMM_PANEL_COLUMNS * 4)

// Depth is consumed four bytes at a time (one vpdpbusd lane); a partial last group is zero-padded.
static inline size_t qf_gemm_depth_groups(size_t k) { return (k + 3) / 4; }

#endif
