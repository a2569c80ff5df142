// Packed depthwise weights (layout in qf_kernels.h) and the tap geometry shared by the ISA versions.
// Private header.
#ifndef QF_DWCONV_LAYOUT_H
#define QF_DWCONV_LAYOUT_H

#include <stddef.h>
#include <stdint.h>
#include "qf_kernels.h"

enum { QF_DW_BIAS = 0, QF_DW_MULTIPLIER = 1, QF_DW_LEFT_SHIFT = 2, QF_DW_RIGHT_SHIFT = 3 };
#define QF_DW_HEADER_BYTES (4 * QF_DWCONV_GROUP_CHANNELS * 4)
#define QF_DW_GROUP_BYTES (QF_DW_HEADER_BYTES + 9 * QF_DWCONV_GROUP_CHANNELS)

// The nine input pixels one output pixel reads (row-major taps). A tap outside the image is NULL: it reads the
// input zero point, and since the packed bias already subtracts zero_point·Σ(all 9 weights), the kernels add
// zero_point·w for such a tap so that it contributes exactly nothing.
static inline void qf_dwconv_taps(const qf_dwconv_shape* s, const uint8_t* image, size_t oy, size_t ox,
                                  const uint8_t* taps[9]) {
    for (int ky = 0; ky < 3; ky++) {
        const ptrdiff_t iy = (ptrdiff_t)(oy * s->stride) - 1 + ky;
        for (int kx = 0; kx < 3; kx++) {
            const ptrdiff_t ix = (ptrdiff_t)(ox * s->stride) - 1 + kx;
            const int inside = iy >= 0 && iy < (ptrdiff_t)s->height && ix >= 0 && ix < (ptrdiff_t)s->width;
            taps[ky * 3 + kx] = inside ? image + ((size_t)iy * s->width + (size_t)ix) * s->channels : NULL;
        }
    }
}

#endif
