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
#include <string.h>
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

// Whether qf_requant_hi_avx512 may add the output zero point zp itself (qf_requant_hi_set's zero_point): its
// shifted value SRDHM + R − neg then carries zp·2^r as well and must stay an int32. With no left shift
// |SRDHM| < 2^30 (accumulators below 2^30), so zp·2^r + R < 2^30 suffices (r ≤ 22 for every zero point).
static inline int qf_requant_hi_folds_zero_point(int32_t left_shift, int32_t right_shift, int32_t zero_point) {
    const int64_t rounding = (int64_t)((UINT32_C(1) << right_shift) >> 1);
    return left_shift == 0 && ((int64_t)zero_point << right_shift) + rounding < (INT64_C(1) << 30);
}

// Writes lane `lane`'s constants of qf_requant_hi_avx512 (layout there) into five 16-lane int32 rows.
// zero_point: the output zero point the requantization adds (only where qf_requant_hi_folds_zero_point), or 0.
static inline void qf_requant_hi_set(int32_t* m2_row, int32_t* m2_odd_row, int32_t* nudge_even_row,
                                     int32_t* nudge_odd_row, int32_t* neg_fix_row, size_t lane, int32_t multiplier,
                                     int32_t right_shift, int32_t zero_point) {
    const uint32_t m2 = 2u * (uint32_t)multiplier;  // multiplier < 2^31, so 2·m fits uint32
    m2_row[lane] = (int32_t)m2;
    if (lane % 2 == 1) m2_odd_row[lane - 1] = (int32_t)m2;
    // R + zp·2^r: (y + R + zp·2^r) >> r = ((y + R) >> r) + zp.
    const int64_t rounding = (int64_t)((UINT32_C(1) << right_shift) >> 1) + ((int64_t)zero_point << right_shift);
    const int64_t nudge = (INT64_C(1) << 31) + rounding * (INT64_C(1) << 32);
    memcpy((int64_t*)(lane % 2 == 1 ? nudge_odd_row : nudge_even_row) + lane / 2, &nudge, sizeof(nudge));
    neg_fix_row[lane] = (int32_t)(m2 + (right_shift > 0 ? 1u : 0u));
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

// The whole MultiplyByQuantizedMultiplier (after any left shift) in 9 instructions, the form of the GEMM,
// depthwise and Add epilogues (requantization was ~40 % of the GEMM's and the depthwise's time; 12 instructions
// before). Written as one expression, with R = (1 << r) >> 1 and neg = [x < 0 and r > 0]:
//   result = floor((x·m + 2^30 + R·2^31 − neg·2^31) / 2^(31+r))
// (SRDHM's rounding, then the rounding shift's "(y − [y < 0] + R) >> r"; [y < 0] may be taken from x because
// x ≥ 0 gives y ≥ 0 and x < 0 gives y ≤ 0, where y = 0 yields 0 with or without it). Doubled, the first rounding
// lands in the high 32 bits of a 64-bit value: hi(2·x·m + 2^31 + R·2^32) = SRDHM(x, m) + R, which one masked
// dword shuffle gathers for the 16 lanes (no 64-bit shifts and blend). The multiply is unsigned (2·m < 2^32 does
// not fit a signed lane), so a negative x counts as x + 2^32 and its high half comes out 2·m too large (mod 2^32);
// negative lanes subtract neg_fix = 2·m + [r > 0], which removes that and applies −neg at once. All arithmetic
// is exact modulo 2^64 and 2^32 and the true result fits int32, so this is bit-identical to the scalar
// qf_multiply_by_quantized_multiplier_scalar for |x| < 2^30 (accumulators stay far below: K·255·127 < 2^30
// for K up to 33,000). A folded output zero point zp (qf_requant_hi_folds_zero_point) adds zp·2^r to R, so the
// result comes out with zp added: (y + R + zp·2^r) >> r = ((y + R) >> r) + zp, exactly, while the sum stays an
// int32; the packs then need no zero point add (qf_pack_u8_folded_avx512). Per-channel constants, precomputed at
// pack time by qf_requant_hi_set:
//   m2          2·m as uint32 (vpmuludq reads the even lanes: channels 0, 2, …)
//   m2_odd      lane 2i: 2·m of channel 2i+1
//   nudge_even  8 int64 2^31 + R·2^32 of channels 0, 2, … (R + zp·2^r with a folded zero point); nudge_odd
//               the same for channels 1, 3, …
//   neg_fix     2·m + [r > 0] as uint32
//   right       r
typedef struct {
    __m512i m2, m2_odd, nudge_even, nudge_odd, neg_fix, right;
} qf_requant_hi;

QF_TARGET_AVX512VNNI static inline __m512i qf_requant_hi_avx512(__m512i x, const qf_requant_hi* c) {
    const __mmask16 negative = _mm512_cmplt_epi32_mask(x, _mm512_setzero_si512());
    const __m512i even = _mm512_add_epi64(_mm512_mul_epu32(x, c->m2), c->nudge_even);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64(x, 32), c->m2_odd), c->nudge_odd);
    // Even lanes take dword 1 (3) of their 128-bit lane, the high half of `even`'s product; odd lanes keep `odd`'s.
    __m512i y = _mm512_mask_shuffle_epi32(odd, (__mmask16)0x5555, even, _MM_PERM_DDBB);
    y = _mm512_mask_sub_epi32(y, negative, y, c->neg_fix);
    return _mm512_srav_epi32(y, c->right);
}

// qf_requant_hi_avx512 for an output whose clamp starts at or above its zero point (qmin ≥ zp: a fused ReLU or
// ReLU6), one instruction shorter. A negative x gives a result ≤ 0, which that clamp turns into qmin, and so does
// x = 0 (hi(2^31 + R·2^32) = R, and R >> r = 0): negative lanes may be zeroed instead of corrected, one vpmaxsd in
// place of the compare and the masked subtract. Bit-identical after the clamp, not before it.
QF_TARGET_AVX512VNNI static inline __m512i qf_requant_hi_relu_avx512(__m512i x, const qf_requant_hi* c) {
    x = _mm512_max_epi32(x, _mm512_setzero_si512());
    const __m512i even = _mm512_add_epi64(_mm512_mul_epu32(x, c->m2), c->nudge_even);
    const __m512i odd = _mm512_add_epi64(_mm512_mul_epu32(_mm512_srli_epi64(x, 32), c->m2_odd), c->nudge_odd);
    const __m512i y = _mm512_mask_shuffle_epi32(odd, (__mmask16)0x5555, even, _MM_PERM_DDBB);
    return _mm512_srav_epi32(y, c->right);
}

// Four requantized int32 vectors (without the zero point) → 64 bytes clamped to [0, 255] after adding the zero
// point: packs saturate to int16, the zero point is added with int16 saturation (one add per 32 values instead of
// one per 16), and packus saturates to [0, 255]. Exact: a value saturated at ±32767 stays outside [0, 255] after
// adding a zero point in [0, 255]. Lane L of the result holds values 4L..4L+3 of y0, y1, y2, y3 (one dword each),
// the order of the in-lane packs.
// Two of them to int16 words first: the depthwise 2×2 blocks pack as they go (qf_dwv_requantize4).
QF_TARGET_AVX512VNNI static inline __m512i qf_pack_i16_avx512(__m512i y0, __m512i y1, __m512i zero_point16) {
    return _mm512_adds_epi16(_mm512_packs_epi32(y0, y1), zero_point16);
}

QF_TARGET_AVX512VNNI static inline __m512i qf_pack_u8_avx512(__m512i y0, __m512i y1, __m512i y2, __m512i y3,
                                                            __m512i zero_point16) {
    return _mm512_packus_epi16(qf_pack_i16_avx512(y0, y1, zero_point16), qf_pack_i16_avx512(y2, y3, zero_point16));
}

// The same for results that already include the zero point (folded into their rounding constant): packs_epi32
// saturates y + zp to int16 and packus to [0, 255], the same bytes as the two saturating steps with the add.
QF_TARGET_AVX512VNNI static inline __m512i qf_pack_u8_folded_avx512(__m512i y0, __m512i y1, __m512i y2, __m512i y3) {
    return _mm512_packus_epi16(_mm512_packs_epi32(y0, y1), _mm512_packs_epi32(y2, y3));
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
