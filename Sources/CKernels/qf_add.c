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

QF_TARGET_AVX512VNNI void qf_add_u8_avx512vnni(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y,
                                               const qf_add_params* p, const qf_output_params* out) {
    const __m512i a_zero = _mm512_set1_epi32(p->a_zero_point), b_zero = _mm512_set1_epi32(p->b_zero_point);
    const __m512i left = _mm512_set1_epi32(p->left_shift);
    const __m512i zero_point = _mm512_set1_epi32(out->zero_point);
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
