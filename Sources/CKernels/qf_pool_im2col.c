// Global average pooling (u8 → u8 with requantization) and the u8 im2col used by general convolutions.
#include <string.h>

#include "qf_requant.h"

static inline void qf_shift_split(int32_t shift, int32_t* left, int32_t* right) {
    *left = shift > 0 ? shift : 0;
    *right = shift < 0 ? -shift : 0;
}

void qf_gavgpool_u8_scalar(size_t batch, size_t pixels, size_t channels, const uint8_t* x, uint8_t* y,
                           const qf_gavgpool_params* p, const qf_output_params* out) {
    int32_t left, right;
    qf_shift_split(p->shift, &left, &right);
    // The zero point is subtracted once per channel (pixels · zp) instead of once per element.
    const int32_t zero_sum = (int32_t)pixels * p->input_zero_point;
    for (size_t n = 0; n < batch; n++) {
        const uint8_t* image = x + n * pixels * channels;
        for (size_t c = 0; c < channels; c++) {
            int32_t sum = 0;
            for (size_t i = 0; i < pixels; i++) sum += image[i * channels + c];
            y[n * channels + c] = qf_requantize_scalar(sum - zero_sum, p->multiplier, left, right, out);
        }
    }
}

void qf_im2col_u8_scalar(const qf_conv_shape* s, const uint8_t* input, uint8_t zero_point, size_t row_begin,
                         size_t row_end, uint8_t* patches) {
    const size_t row_length = s->kernel_h * s->kernel_w * s->channels;
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t ox = r % s->out_width, oy = (r / s->out_width) % s->out_height;
        const size_t image = r / (s->out_width * s->out_height);
        const uint8_t* image_base = input + image * s->height * s->width * s->channels;
        uint8_t* dst = patches + (r - row_begin) * row_length;
        for (size_t ky = 0; ky < s->kernel_h; ky++) {
            const ptrdiff_t iy = (ptrdiff_t)(oy * s->stride_h + ky) - (ptrdiff_t)s->pad_top;
            for (size_t kx = 0; kx < s->kernel_w; kx++) {
                const ptrdiff_t ix = (ptrdiff_t)(ox * s->stride_w + kx) - (ptrdiff_t)s->pad_left;
                if (iy >= 0 && iy < (ptrdiff_t)s->height && ix >= 0 && ix < (ptrdiff_t)s->width) {
                    memcpy(dst, image_base + ((size_t)iy * s->width + (size_t)ix) * s->channels, s->channels);
                } else {
                    // Padding is real zero in the float model, which is the zero point in u8.
                    memset(dst, zero_point, s->channels);
                }
                dst += s->channels;
            }
        }
    }
}

#if QF_X86

QF_TARGET_AVX512VNNI void qf_gavgpool_u8_avx512vnni(size_t batch, size_t pixels, size_t channels, const uint8_t* x,
                                                    uint8_t* y, const qf_gavgpool_params* p,
                                                    const qf_output_params* out) {
    int32_t left, right;
    qf_shift_split(p->shift, &left, &right);
    const __m512i zero_sum = _mm512_set1_epi32((int32_t)pixels * p->input_zero_point);
    const __m512i mult = _mm512_set1_epi32(p->multiplier);
    const __m512i lefts = _mm512_set1_epi32(left), rights = _mm512_set1_epi32(right);
    const __m512i zero_point = _mm512_set1_epi32(out->zero_point);
    const __m512i lo = _mm512_set1_epi32(out->qmin - out->zero_point);
    const __m512i hi = _mm512_set1_epi32(out->qmax - out->zero_point);
    for (size_t n = 0; n < batch; n++) {
        const uint8_t* image = x + n * pixels * channels;
        for (size_t c = 0; c < channels; c += 16) {
            const __mmask16 mask =
                channels - c >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (channels - c)) - 1u);
            __m512i sum = _mm512_setzero_si512();
            for (size_t i = 0; i < pixels; i++) {
                sum = _mm512_add_epi32(sum, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, image + i * channels + c)));
            }
            const __m512i v = qf_requantize_avx512(_mm512_sub_epi32(sum, zero_sum), mult, lefts, rights, lo, hi,
                                                   zero_point);
            _mm_mask_storeu_epi8(y + n * channels + c, mask, _mm512_cvtepi32_epi8(v));
        }
    }
}

QF_TARGET_AVX2 void qf_gavgpool_u8_avx2(size_t batch, size_t pixels, size_t channels, const uint8_t* x,
                                        uint8_t* y, const qf_gavgpool_params* p, const qf_output_params* out) {
    int32_t left, right;
    qf_shift_split(p->shift, &left, &right);
    const __m256i zero_sum = _mm256_set1_epi32((int32_t)pixels * p->input_zero_point);
    const __m256i mult = _mm256_set1_epi32(p->multiplier);
    const __m256i lefts = _mm256_set1_epi32(left), rights = _mm256_set1_epi32(right);
    const __m256i zero_point = _mm256_set1_epi32(out->zero_point);
    const __m256i lo = _mm256_set1_epi32(out->qmin - out->zero_point);
    const __m256i hi = _mm256_set1_epi32(out->qmax - out->zero_point);
    const size_t vector_channels = channels / 8 * 8;
    for (size_t n = 0; n < batch; n++) {
        const uint8_t* image = x + n * pixels * channels;
        for (size_t c = 0; c < vector_channels; c += 8) {
            __m256i sum = _mm256_setzero_si256();
            for (size_t i = 0; i < pixels; i++) {
                const __m128i bytes = _mm_loadl_epi64((const __m128i*)(image + i * channels + c));
                sum = _mm256_add_epi32(sum, _mm256_cvtepu8_epi32(bytes));
            }
            const __m256i v = qf_requantize_avx2(_mm256_sub_epi32(sum, zero_sum), mult, lefts, rights, lo, hi,
                                                 zero_point);
            _mm_storel_epi64((__m128i*)(y + n * channels + c), qf_narrow_u8_avx2(v));
        }
        for (size_t c = vector_channels; c < channels; c++) {  // the last < 8 channels
            int32_t sum = 0;
            for (size_t i = 0; i < pixels; i++) sum += image[i * channels + c];
            y[n * channels + c] = qf_requantize_scalar(sum - (int32_t)pixels * p->input_zero_point, p->multiplier,
                                                       left, right, out);
        }
    }
}

#else
void qf_gavgpool_u8_avx512vnni(size_t batch, size_t pixels, size_t channels, const uint8_t* x, uint8_t* y,
                               const qf_gavgpool_params* p, const qf_output_params* out) {
    qf_gavgpool_u8_scalar(batch, pixels, channels, x, y, p, out);
}
void qf_gavgpool_u8_avx2(size_t batch, size_t pixels, size_t channels, const uint8_t* x, uint8_t* y,
                         const qf_gavgpool_params* p, const qf_output_params* out) {
    qf_gavgpool_u8_scalar(batch, pixels, channels, x, y, p, out);
}
#endif
