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

// Generic region (16-channel groups, used by the portable and AVX2 kernels), padded to a multiple of 64 bytes.
static inline size_t qf_dw_generic_bytes(size_t channels) {
    const size_t bytes = (channels + QF_DWCONV_GROUP_CHANNELS - 1) / QF_DWCONV_GROUP_CHANNELS * QF_DW_GROUP_BYTES;
    return (bytes + 63) / 64 * 64;
}

// VNNI region, after the generic one: blocks of 64 channels for vpdpbusd, which multiplies four u8·s8 pairs per
// 32-bit lane, so four taps of one channel must share a lane. The kernel loads one tap of 64 channels per zmm
// and interleaves four taps with unpack instructions, which work inside 128-bit lanes: afterwards register
// R_j (j = 0..3) holds in lane i the four taps of channel 16·(i/4) + 4·j + i%4. Everything per channel (weights,
// bias, requantization constants) is stored in that order, and the final pack instructions (also in-lane)
// restore the natural channel order for the store. Taps 0-3 and 4-7 form quads 0 and 1; quad 2 is tap 8 alone
// (weight bytes 1-3 zero).
enum {
    QF_DWV_BIAS = 0,
    QF_DWV_LEFT_SHIFT = 1,
    QF_DWV_RIGHT_SHIFT = 2,
    QF_DWV_M2 = 3,           // the constants of qf_requant_hi_avx512 (qf_requant.h)
    QF_DWV_M2_ODD = 4,
    QF_DWV_NUDGE_EVEN = 5,
    QF_DWV_NUDGE_ODD = 6,
    QF_DWV_NEG_FIX = 7,
    QF_DWV_HEADER_ROWS = 8
};
#define QF_DWV_BLOCK_CHANNELS 64
#define QF_DWV_HEADER_BYTES (4 * QF_DWV_HEADER_ROWS * 64)  // [j][row][16 lanes] int32
#define QF_DWV_WEIGHT_BYTES (3 * 4 * 64)                  // [quad][j][16 lanes][4 taps] int8
// Stride 1 computes two neighbouring output pixels at once: per kernel row, the four input columns they read
// (ox−1 … ox+2) form one quad, which is interleaved once and multiplied with the row's weights shifted into
// bytes 0-2 for the left pixel and 1-3 for the right one (16 fewer shuffles and 6 fewer loads per pair). 2×2
// blocks of two such pairs (qf_dwv_pixel_quads) use the same weights, each input row's quad for both rows.
#define QF_DWV_PAIR_WEIGHT_BYTES (3 * 2 * 4 * 64)         // [kernel row][left, right][j][16 lanes][4] int8
#define QF_DWV_BLOCK_BYTES (QF_DWV_HEADER_BYTES + QF_DWV_WEIGHT_BYTES + QF_DWV_PAIR_WEIGHT_BYTES)

static inline size_t qf_dwv_blocks(size_t channels) {
    return (channels + QF_DWV_BLOCK_CHANNELS - 1) / QF_DWV_BLOCK_CHANNELS;
}

// Output pixels sharing one register in a block. A full block is one pixel's 64 channels. When the last block
// of a layer holds ≤ 32 (≤ 16) channels, three quarters (half) of every instruction would work on padding, so
// that block packs its channels twice (four times), once per 256-bit half (128-bit lane), and the kernel loads
// a different output pixel into each copy: 2 (4) pixels per instruction. Everything the kernel does between
// load and store stays inside 128-bit lanes, so the copies never mix. (MobileNetV2-FMNIST has 16, 48 = 32 + 16,
// 96 = 64 + 32 and 480 = 448 + 32 channels: 28 % of its depthwise work was padding lanes.)
static inline size_t qf_dwv_block_pixels(size_t channels, size_t block) {
    const size_t valid = channels - block * QF_DWV_BLOCK_CHANNELS;
    return valid > 32 ? 1 : (valid > 16 ? 2 : 4);
}

// The channel (within its block) in lane i of register R_j, for a block of `pixels` pixels per register.
static inline size_t qf_dwv_channel(size_t j, size_t i, size_t pixels) {
    const size_t lanes = 4 / pixels;  // distinct 128-bit lanes of channels: 4, 2 or 1
    return 16 * ((i / 4) % lanes) + 4 * j + i % 4;
}

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

// The same, with the common case first: for a pixel whose 3×3 window lies inside the image the taps are fixed
// offsets from its top-left input pixel (measured: 9-16 % of the VNNI depthwise time).
static inline void qf_dwconv_taps_fast(const qf_dwconv_shape* s, const uint8_t* image, size_t oy, size_t ox,
                                       const uint8_t* taps[9]) {
    const size_t iy = oy * s->stride, ix = ox * s->stride;  // centre of the window
    if (iy >= 1 && iy + 1 < s->height && ix >= 1 && ix + 1 < s->width) {
        const size_t row = s->width * s->channels;
        const uint8_t* top_left = image + ((iy - 1) * s->width + (ix - 1)) * s->channels;
        for (int ky = 0; ky < 3; ky++) {
            for (int kx = 0; kx < 3; kx++) taps[ky * 3 + kx] = top_left + (size_t)ky * row + (size_t)kx * s->channels;
        }
        return;
    }
    qf_dwconv_taps(s, image, oy, ox, taps);
}

#endif
