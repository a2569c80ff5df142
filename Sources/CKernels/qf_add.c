// Quantized Add of two u8 tensors with their own scales and zero points, TFLite's fixed-point scheme:
// each input's difference to its zero point is shifted left (headroom for the rescale), rescaled to a common
// scale 2·max(s_a, s_b) by its own multiplier, the two are added, and the sum is rescaled to the output scale.
#include "qf_requant.h"

void qf_add_u8_scalar(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y, const qf_add_params* p,
                      const qf_output_params* out) {
    const int32_t a_left = p->a_shift > 0 ? p->a_shift : 0, a_right = p->a_shift < 0 ? -p->a_shift : 0;
    const int32_t b_left = p->b_shift > 0 ? p->b_shift : 0, b_right = p->b_shift < 0 ? -p->b_shift : 0;
    const int32_t o_left = p->out_shift > 0 ? p->out_shift : 0, o_right = p->out_shift < 0 ? -p->out_shift : 0;
    for (size_t i = 0; i < count; i++) {
        const int32_t av = (int32_t)((uint32_t)((int32_t)a[i] - p->a_zero_point) << p->left_shift);
        const int32_t bv = (int32_t)((uint32_t)((int32_t)b[i] - p->b_zero_point) << p->left_shift);
        const int32_t sum = qf_multiply_by_quantized_multiplier_scalar(av, p->a_multiplier, a_left, a_right) +
                            qf_multiply_by_quantized_multiplier_scalar(bv, p->b_multiplier, b_left, b_right);
        y[i] = qf_requantize_scalar(sum, p->out_multiplier, o_left, o_right, out);
    }
}

#if QF_X86

QF_TARGET_AVX512VNNI static inline __m512i qf_rescale_avx512(__m512i x, int32_t multiplier, int32_t shift) {
    x = _mm512_sllv_epi32(x, _mm512_set1_epi32(shift > 0 ? shift : 0));
    x = qf_srdhm_avx512(x, _mm512_set1_epi32(multiplier));
    return qf_rounding_divide_by_pot_avx512(x, _mm512_set1_epi32(shift < 0 ? -shift : 0));
}

// One input's rescale MBQM((v − zp) << L, m, −r) for the usual parameters (9 ≤ L ≤ 20, TFLite uses 20; no left
// shift of its own),
// in 32-bit arithmetic. With d = v − zp (|d| ≤ 255), s = 31 − L and m = mh·2^s + ml (0 ≤ ml < 2^s):
//   SRDHM(d·2^L, m) = floor((d·m + 2^(s−1)) / 2^s) = d·mh + floor((d·ml + 2^(s−1)) / 2^s)
// exactly (d·mh·2^s is a multiple of 2^s), and both products fit in int32 (|d·mh| < 2^(8+L), |d·ml| < 2^(8+s)
// with s ≤ 22), and the sum of two rescaled inputs stays below 2^29 (L ≤ 20), inside the epilogue's bound.
// The rounding divide by 2^r is (y − [y < 0] + 2^(r−1)) >> r (qf_rounding_shift_avx512). 11 instructions
// instead of ~20 for the 64-bit SRDHM.
typedef struct {
    __m512i zero_point, high, low, half, rounding;
    __m128i s, r;
    int rounds;
} qf_add_side;

QF_TARGET_AVX512VNNI static inline qf_add_side qf_add_side_make(int32_t zero_point, int32_t left_shift,
                                                                int32_t multiplier, int32_t shift) {
    const int32_t s = 31 - left_shift, r = -shift;
    qf_add_side side = {
        .zero_point = _mm512_set1_epi32(zero_point),
        .high = _mm512_set1_epi32(multiplier >> s),
        .low = _mm512_set1_epi32(multiplier & ((1 << s) - 1)),
        .half = _mm512_set1_epi32(1 << (s - 1)),
        .rounding = _mm512_set1_epi32(r > 0 ? 1 << (r - 1) : 0),
        .s = _mm_cvtsi32_si128(s),
        .r = _mm_cvtsi32_si128(r),
        .rounds = r > 0,
    };
    return side;
}

QF_TARGET_AVX512VNNI static inline __m512i qf_add_side_rescale(__m128i bytes, const qf_add_side* side) {
    const __m512i d = _mm512_sub_epi32(_mm512_cvtepu8_epi32(bytes), side->zero_point);
    const __m512i low = _mm512_sra_epi32(_mm512_add_epi32(_mm512_mullo_epi32(d, side->low), side->half), side->s);
    __m512i y = _mm512_add_epi32(_mm512_mullo_epi32(d, side->high), low);
    if (side->rounds) {
        y = _mm512_add_epi32(_mm512_add_epi32(y, _mm512_srai_epi32(y, 31)), side->rounding);
        y = _mm512_sra_epi32(y, side->r);
    }
    return y;
}

QF_TARGET_AVX512VNNI void qf_add_u8_avx512vnni(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y,
                                               const qf_add_params* p, const qf_output_params* out) {
    const __m512i zero_point = _mm512_set1_epi32(out->zero_point);
    const int fast = p->left_shift >= 9 && p->left_shift <= 20 && p->a_shift <= 0 && p->b_shift <= 0 &&
                     p->out_shift <= 0;
    if (fast) {
        // 64 elements per step; the sum's rescale is the GEMM's epilogue (|sum| < 2^29), and the packs saturate to
        // [0, 255] (a byte min/max only for a narrower range).
        const qf_add_side sa = qf_add_side_make(p->a_zero_point, p->left_shift, p->a_multiplier, p->a_shift);
        const qf_add_side sb = qf_add_side_make(p->b_zero_point, p->left_shift, p->b_multiplier, p->b_shift);
        int32_t rows[5][16];
        for (size_t lane = 0; lane < 16; lane++) {
            qf_requant_hi_set(rows[0], rows[1], rows[2], rows[3], rows[4], lane, p->out_multiplier, -p->out_shift, 0);
        }
        const qf_requant_hi constants = {
            .m2 = _mm512_loadu_si512(rows[0]),
            .m2_odd = _mm512_loadu_si512(rows[1]),
            .nudge_even = _mm512_loadu_si512(rows[2]),
            .nudge_odd = _mm512_loadu_si512(rows[3]),
            .neg_fix = _mm512_loadu_si512(rows[4]),
            .right = _mm512_set1_epi32(-p->out_shift),
        };
        const __m512i zero_point16 = _mm512_set1_epi16((short)out->zero_point);
        const __m512i qmin = _mm512_set1_epi8((char)(uint8_t)out->qmin), qmax = _mm512_set1_epi8((char)(uint8_t)out->qmax);
        const int clamp_min = out->qmin > 0, clamp_max = out->qmax < 255;
        // After the packs lane L holds elements 4L..4L+3 of each 16-element group g (dword 4L + g); this puts
        // group g back in lane g.
        const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        for (size_t i = 0; i < count; i += 64) {
            const size_t n = count - i < 64 ? count - i : 64;
            __m512i v[4];
            for (int g = 0; g < 4; g++) {
                const size_t first = (size_t)g * 16, valid = n > first ? (n - first < 16 ? n - first : 16) : 0;
                const __mmask16 mask = (__mmask16)((1u << valid) - 1u);
                const __m512i sum = _mm512_add_epi32(qf_add_side_rescale(_mm_maskz_loadu_epi8(mask, a + i + first), &sa),
                                                     qf_add_side_rescale(_mm_maskz_loadu_epi8(mask, b + i + first), &sb));
                v[g] = qf_requant_hi_avx512(sum, &constants);
            }
            __m512i bytes = qf_pack_u8_avx512(v[0], v[1], v[2], v[3], zero_point16);
            if (clamp_min) bytes = _mm512_max_epu8(bytes, qmin);
            if (clamp_max) bytes = _mm512_min_epu8(bytes, qmax);
            bytes = _mm512_permutexvar_epi32(order, bytes);
            const __mmask64 store = n == 64 ? ~(__mmask64)0 : (((__mmask64)1 << n) - 1);
            _mm512_mask_storeu_epi8(y + i, store, bytes);
        }
        return;
    }
    const __m512i a_zero = _mm512_set1_epi32(p->a_zero_point), b_zero = _mm512_set1_epi32(p->b_zero_point);
    const __m512i left = _mm512_set1_epi32(p->left_shift);
    const __m512i lo = _mm512_set1_epi32(out->qmin - out->zero_point);
    const __m512i hi = _mm512_set1_epi32(out->qmax - out->zero_point);
    for (size_t i = 0; i < count; i += 16) {
        const __mmask16 mask = count - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (count - i)) - 1u);
        __m512i av = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, a + i)), a_zero);
        __m512i bv = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, b + i)), b_zero);
        av = qf_rescale_avx512(_mm512_sllv_epi32(av, left), p->a_multiplier, p->a_shift);
        bv = qf_rescale_avx512(_mm512_sllv_epi32(bv, left), p->b_multiplier, p->b_shift);
        __m512i sum = qf_rescale_avx512(_mm512_add_epi32(av, bv), p->out_multiplier, p->out_shift);
        sum = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(sum, lo), hi), zero_point);
        _mm_mask_storeu_epi8(y + i, mask, _mm512_cvtepi32_epi8(sum));
    }
}

QF_TARGET_AVX2 static inline __m256i qf_rescale_avx2(__m256i x, int32_t multiplier, int32_t shift) {
    x = _mm256_sllv_epi32(x, _mm256_set1_epi32(shift > 0 ? shift : 0));
    x = qf_srdhm_avx2(x, _mm256_set1_epi32(multiplier));
    return qf_rounding_divide_by_pot_avx2(x, _mm256_set1_epi32(shift < 0 ? -shift : 0));
}

QF_TARGET_AVX2 void qf_add_u8_avx2(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y,
                                   const qf_add_params* p, const qf_output_params* out) {
    const __m256i a_zero = _mm256_set1_epi32(p->a_zero_point), b_zero = _mm256_set1_epi32(p->b_zero_point);
    const __m256i left = _mm256_set1_epi32(p->left_shift);
    const __m256i zero_point = _mm256_set1_epi32(out->zero_point);
    const __m256i lo = _mm256_set1_epi32(out->qmin - out->zero_point);
    const __m256i hi = _mm256_set1_epi32(out->qmax - out->zero_point);
    size_t i = 0;
    for (; i + 8 <= count; i += 8) {
        __m256i av = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(a + i))), a_zero);
        __m256i bv = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(b + i))), b_zero);
        av = qf_rescale_avx2(_mm256_sllv_epi32(av, left), p->a_multiplier, p->a_shift);
        bv = qf_rescale_avx2(_mm256_sllv_epi32(bv, left), p->b_multiplier, p->b_shift);
        __m256i sum = qf_rescale_avx2(_mm256_add_epi32(av, bv), p->out_multiplier, p->out_shift);
        sum = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(sum, lo), hi), zero_point);
        _mm_storel_epi64((__m128i*)(y + i), qf_narrow_u8_avx2(sum));
    }
    qf_add_u8_scalar(count - i, a + i, b + i, y + i, p, out);  // the last < 8 elements
}

#else
void qf_add_u8_avx512vnni(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y, const qf_add_params* p,
                          const qf_output_params* out) {
    qf_add_u8_scalar(count, a, b, y, p, out);
}
void qf_add_u8_avx2(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y, const qf_add_params* p,
                    const qf_output_params* out) {
    qf_add_u8_scalar(count, a, b, y, p, out);
}
#endif
