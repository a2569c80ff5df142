// The one requantization used by every qatflow int8 kernel, in scalar, AVX2 and AVX-512 form.
// Private header (not in include/): the Swift side never sees it.
//
// Semantics are gemmlowp's / TFLite's MultiplyByQuantizedMultiplier (the double-rounding form):
//   x1 = x << left_shift                        (wrapping, as TFLite; left shifts only occur for multipliers >= 1)
//   x2 = SRDHM(x1, m)  = round_half_up(x1 · m / 2^31)
//        gemmlowp writes it as (x1·m + nudge) / 2^31 with nudge = ±2^30 and C division (truncation); for every
//        product that is floor((x1·m + 2^30) / 2^31), i.e. (x1·m + 2^30) >> 31 with an arithmetic shift.
//        Its saturating case (x1 = m = INT32_MIN) cannot happen: m is in [0, 2^31).
//   x3 = RoundingDivideByPOT(x2, right_shift) = x2 / 2^right_shift rounded half away from zero
//   y  = clamp(x3 + zero_point, qmin, qmax)
// The SIMD versions clamp x3 to [qmin - zp, qmax - zp] before adding zp, which is the same function without
// the chance of an int32 overflow in the addition.
#ifndef QF_REQUANT_H
#define QF_REQUANT_H

#include <stdint.h>
#include "qf_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define QF_X86 1
#define QF_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define QF_TARGET_AVX512VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#else
#define QF_X86 0
#endif

static inline int32_t qf_srdhm_scalar(int32_t x, int32_t m) {
    int64_t product = (int64_t)x * (int64_t)m;
    return (int32_t)((product + (INT64_C(1) << 30)) >> 31);
}

static inline int32_t qf_rounding_divide_by_pot_scalar(int32_t x, int32_t exponent) {
    const int32_t mask = (int32_t)((UINT32_C(1) << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t qf_multiply_by_quantized_multiplier_scalar(int32_t x, int32_t m, int32_t left_shift,
                                                                  int32_t right_shift) {
    int32_t shifted = (int32_t)((uint32_t)x << left_shift);
    return qf_rounding_divide_by_pot_scalar(qf_srdhm_scalar(shifted, m), right_shift);
}

static inline uint8_t qf_requantize_scalar(int32_t acc, int32_t m, int32_t left_shift, int32_t right_shift,
                                           const qf_output_params* out) {
    int32_t y = qf_multiply_by_quantized_multiplier_scalar(acc, m, left_shift, right_shift);
    const int32_t lo = out->qmin - out->zero_point, hi = out->qmax - out->zero_point;
    y = y < lo ? lo : (y > hi ? hi : y);
    return (uint8_t)(y + out->zero_point);
}

#if QF_X86
// ---- AVX-512: 16 lanes ----
// SRDHM on 16 lanes. vpmuldq multiplies the even 32-bit lanes into signed 64-bit products, so the odd lanes of
// x are moved down first; `m_odd` holds the odd lanes' multipliers in even positions (see qf_srdhm_avx512).
QF_TARGET_AVX512VNNI static inline __m512i qf_srdhm_split_avx512(__m512i x, __m512i m_even, __m512i m_odd) {
    const __m512i nudge = _mm512_set1_epi64(INT64_C(1) << 30);
    __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, m_even), nudge);
    __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), m_odd), nudge);
    // Bits 31..62 of each sum are the 32-bit result (it fits in int32, so a logical shift gives the same low
    // bits as an arithmetic one): shift even sums down into the low half, odd sums up into the high half.
    even = _mm512_srli_epi64(even, 31);
    odd = _mm512_slli_epi64(odd, 1);
    return _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
}

QF_TARGET_AVX512VNNI static inline __m512i qf_srdhm_avx512(__m512i x, __m512i m) {
    return qf_srdhm_split_avx512(x, m, _mm512_srli_epi64(m, 32));
}

// RoundingDivideByPOT without gemmlowp's remainder/threshold compare: for exponent r ≥ 1, rounding half away
// from zero is (y − [y < 0] + 2^(r−1)) >> r; for r = 0 nothing changes. `rounding` = (1 << r) >> 1 and `rounds`
// (lanes with r > 0) are per-channel constants the GEMM precomputes. Exact for |y| < 2^30 (checked exhaustively
// around 0 and on 64M random values per exponent); y comes from SRDHM(x, m) with |y| ≤ |x|, and accumulators
// stay far below 2^30 (K · 255 · 127 < 2^30 for K up to 33,000).
QF_TARGET_AVX512VNNI static inline __m512i qf_rounding_shift_avx512(__m512i y, __m512i exponent, __m512i rounding,
                                                                   __mmask16 rounds) {
    const __mmask16 negative = _mm512_mask_cmplt_epi32_mask(rounds, y, _mm512_setzero_si512());
    y = _mm512_mask_sub_epi32(y, negative, y, _mm512_set1_epi32(1));
    return _mm512_srav_epi32(_mm512_add_epi32(y, rounding), exponent);
}

// The whole MultiplyByQuantizedMultiplier (after any left shift) with per-channel constants precomputed at pack
// time, 15 % fewer instructions than SRDHM followed by qf_rounding_shift_avx512:
//   * the rounding half-unit R = (1 << r) >> 1 rides in the 64-bit nudge: y1 + R = floor((x·m + 2^30 + R·2^31) / 2^31),
//     so `nudge_*` = 2^30 + R·2^31 per lane (even lanes, and odd lanes moved down);
//   * the "−1 for negative y1" of the rounding shift is taken from the sign of x instead (computed in parallel
//     with the multiply): x ≥ 0 gives y1 ≥ 0, and x < 0 gives y1 ≤ 0, where y1 = 0 yields 0 with or without it.
// Exact under the same bound as qf_rounding_shift_avx512 (|x| < 2^30).
QF_TARGET_AVX512VNNI static inline __m512i qf_multiply_shift_avx512(__m512i x, __m512i m_even, __m512i m_odd,
                                                                   __m512i nudge_even, __m512i nudge_odd,
                                                                   __m512i right, __mmask16 rounds) {
    const __mmask16 negative = _mm512_mask_cmplt_epi32_mask(rounds, x, _mm512_setzero_si512());
    __m512i even = _mm512_add_epi64(_mm512_mul_epi32(x, m_even), nudge_even);
    __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(x, 32), m_odd), nudge_odd);
    even = _mm512_srli_epi64(even, 31);
    odd = _mm512_slli_epi64(odd, 1);
    __m512i y = _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, odd);
    y = _mm512_mask_sub_epi32(y, negative, y, _mm512_set1_epi32(1));
    return _mm512_srav_epi32(y, right);
}

QF_TARGET_AVX512VNNI static inline __m512i qf_rounding_divide_by_pot_avx512(__m512i x, __m512i exponent) {
    const __m512i rounding = _mm512_srli_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), exponent), 1);
    return qf_rounding_shift_avx512(x, exponent, rounding, _mm512_test_epi32_mask(exponent, exponent));
}

// acc (int32) → clamped int32 in [qmin, qmax] (already offset by the zero point).
QF_TARGET_AVX512VNNI static inline __m512i qf_requantize_avx512(__m512i acc, __m512i m, __m512i left,
                                                               __m512i right, __m512i lo, __m512i hi,
                                                               __m512i zero_point) {
    __m512i y = qf_srdhm_avx512(_mm512_sllv_epi32(acc, left), m);
    y = qf_rounding_divide_by_pot_avx512(y, right);
    y = _mm512_min_epi32(_mm512_max_epi32(y, lo), hi);
    return _mm512_add_epi32(y, zero_point);
}

// ---- AVX2: 8 lanes ----
QF_TARGET_AVX2 static inline __m256i qf_srdhm_avx2(__m256i x, __m256i m) {
    const __m256i nudge = _mm256_set1_epi64x(INT64_C(1) << 30);
    __m256i even = _mm256_add_epi64(_mm256_mul_epi32(x, m), nudge);
    __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m, 32)), nudge);
    even = _mm256_srli_epi64(even, 31);
    odd = _mm256_slli_epi64(odd, 1);
    return _mm256_blend_epi32(even, odd, 0xAA);
}

// The same rounding shift as qf_rounding_shift_avx512 (exact for |y| < 2^30).
QF_TARGET_AVX2 static inline __m256i qf_rounding_divide_by_pot_avx2(__m256i y, __m256i exponent) {
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i rounding = _mm256_srli_epi32(_mm256_sllv_epi32(one, exponent), 1);
    // −1 where y < 0 and the exponent is non-zero (srai gives −1 for negative y; cmpgt −1 for r > 0).
    const __m256i adjust = _mm256_and_si256(_mm256_srai_epi32(y, 31), _mm256_cmpgt_epi32(exponent, _mm256_setzero_si256()));
    return _mm256_srav_epi32(_mm256_add_epi32(_mm256_add_epi32(y, adjust), rounding), exponent);
}

QF_TARGET_AVX2 static inline __m256i qf_requantize_avx2(__m256i acc, __m256i m, __m256i left, __m256i right,
                                                       __m256i lo, __m256i hi, __m256i zero_point) {
    __m256i y = qf_srdhm_avx2(_mm256_sllv_epi32(acc, left), m);
    y = qf_rounding_divide_by_pot_avx2(y, right);
    y = _mm256_min_epi32(_mm256_max_epi32(y, lo), hi);
    return _mm256_add_epi32(y, zero_point);
}

// 8 int32 lanes holding values in [0, 255] → 8 bytes in the low half of an __m128i.
QF_TARGET_AVX2 static inline __m128i qf_narrow_u8_avx2(__m256i v) {
    __m128i words = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packus_epi16(words, words);
}
#endif  // QF_X86

#endif
