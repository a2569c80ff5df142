// Offsets inside one packed GEMM panel (layout documented in qf_kernels.h). Private header.
#ifndef QF_GEMM_LAYOUT_H
#define QF_GEMM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include "qf_kernels.h"

// Rows of the int32 header, each QF_GEMM_PANEL_COLUMNS wide (64 bytes). The portable and AVX2 kernels read the
// first four; the VNNI epilogue (qf_requant_hi_avx512) reads RIGHT_SHIFT, LEFT_SHIFT and the five after them, which
// are derived from the first four at pack time (qf_requant_hi_set), and ZERO_POINT_FOLDED: 1 in every lane of every
// panel when those constants add the output zero point (qf_requant_hi_folds_zero_point for all channels), else 0.
enum {
    QF_HEADER_BIAS = 0,
    QF_HEADER_MULTIPLIER = 1,
    QF_HEADER_LEFT_SHIFT = 2,
    QF_HEADER_RIGHT_SHIFT = 3,
    QF_HEADER_M2 = 4,
    QF_HEADER_M2_ODD = 5,
    QF_HEADER_NUDGE_EVEN = 6,
    QF_HEADER_NUDGE_ODD = 7,
    QF_HEADER_NEG_FIX = 8,
    QF_HEADER_ZERO_POINT_FOLDED = 9,
    QF_HEADER_ROWS = 10
};
#define QF_PANEL_HEADER_BYTES (QF_HEADER_ROWS * QF_GEMM_PANEL_COLUMNS * 4)

// Depth is consumed four bytes at a time (one vpdpbusd lane); a partial last group is zero-padded.
static inline size_t qf_gemm_depth_groups(size_t k) { return (k + 3) / 4; }

#endif
