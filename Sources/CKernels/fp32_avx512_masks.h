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
#endif

#endif
