// Lane masks shared by the FP32 AVX-512 kernels (internal header: not part of the CKernels module interface).
#ifndef QF_FP32_AVX512_MASKS_H
#define QF_FP32_AVX512_MASKS_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <stddef.h>

// Lanes j (0..15) with 0 ≤ start + j < limit: a masked load at `base + start` then touches only [base, base + limit).
static inline __mmask16 range_mask(ptrdiff_t start, ptrdiff_t limit) {
    ptrdiff_t low = start < 0 ? -start : 0, high = limit - start;
    if (high > 16) high = 16;
    if (low >= high) return 0;
    unsigned mask = high >= 16 ? 0xFFFFu : ((1u << high) - 1u);
    return (__mmask16)(mask & ~((1u << low) - 1u));
}

// For a flat plane of `count` ≤ 64 floats (rows of `width` floats, width a power of two) read as four 16-lane
// vectors: tap (ky, kx) of a 3×3 window reads position q + offsets[tap]; masks[tap][v] keeps the lanes of vector v
// whose q is inside the plane and whose source is inside the plane and in the right column (zero padding).
static inline void flat_plane_tap_masks(ptrdiff_t count, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
                                        __mmask16 masks[9][4], ptrdiff_t offsets[9]) {
    for (int tap = 0; tap < 9; ++tap) {
        const int ky = tap / 3, kx = tap % 3;
        offsets[tap] = (ky - pad_top) * width + (kx - pad_left);
        for (int v = 0; v < 4; ++v) {
            unsigned mask = 0;
            for (int j = 0; j < 16; ++j) {
                const ptrdiff_t q = 16 * v + j, source = q + offsets[tap];
                const ptrdiff_t x = (q & (width - 1)) + kx - pad_left;
                if (q < count && source >= 0 && source < count && x >= 0 && x < width) mask |= 1u << j;
            }
            masks[tap][v] = (__mmask16)mask;
        }
    }
}
#endif

#endif
