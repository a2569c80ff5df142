// Global average pooling (u8 → u8 with requantization) and the u8 im2col used by general convolutions.
#include <string.h>

#include "qf_requant.h"

static inline void qf_shift_split(int32_t shift, int32_t* left, int32_t* right) {
    *left = shift > 0 ? shift : 0;
    *right = shift < 0 ? -shift : 0;
}

void qf_quantize_f32_u8(size_t count, const float* x, float scale, float zero_point, float high, uint8_t* y,
                        size_t stride) {
    for (size_t i = 0; i < count; i++) {
        const float v = x[i] / scale;
        float code = zero_point;
        if (v == v) {  // not NaN
            // Clamping to ±512 first changes no result (the code saturates at 0 or high ≤ 255 either way) and keeps
            // |v| < 2^22, where adding and subtracting 1.5·2^23 rounds half to even exactly, with no call to rintf
            // (the baseline x86-64 target has no rounding instruction; that call was most of the step's time).
            const float bounded = v < -512.0f ? -512.0f : (v > 512.0f ? 512.0f : v);
            const float q = ((bounded + 12582912.0f) - 12582912.0f) + zero_point;
            code = q < 0.0f ? 0.0f : (q > high ? high : q);
        }
        y[i * stride] = (uint8_t)code;
    }
}

void qf_channel_sums_u8(size_t pixels, size_t channels, const uint8_t* x, int32_t* sums) {
    for (size_t c = 0; c < channels; c++) sums[c] = 0;
    for (size_t i = 0; i < pixels; i++) {
        const uint8_t* row = x + i * channels;
        for (size_t c = 0; c < channels; c++) sums[c] += row[c];
    }
}

void qf_rescale_sums_u8(size_t count, const int32_t* sums, int32_t offset, double scale, double zero_point,
                        double low, double high, uint8_t* y) {
    for (size_t i = 0; i < count; i++) {
        const double v = (double)(sums[i] - offset) * scale;
        // Round half to even by adding and removing 1.5·2^52 (exact for |v| < 2^51), without a call to rint (the
        // baseline x86-64 target has no rounding instruction). Separate statements: nothing may fuse into an FMA.
        const double rounded = (v + 6755399441055744.0) - 6755399441055744.0;
        const double code = rounded + zero_point;
        y[i] = (uint8_t)(code < low ? low : (code > high ? high : code));
    }
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

// Byte loops instead of memcpy/memset: patches are a few bytes (the stem copies 3 per kernel row), where a call
// to the library cost more than the copy (measured: im2col was half of the stem's time). no_builtin keeps clang
// from turning the loops back into those calls.
#if defined(__clang__)
#define QF_NO_MEMORY_BUILTINS __attribute__((no_builtin("memset", "memcpy")))
#else
#define QF_NO_MEMORY_BUILTINS
#endif

QF_NO_MEMORY_BUILTINS static inline void qf_copy_bytes(uint8_t* dst, const uint8_t* src, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = src[i];
}

QF_NO_MEMORY_BUILTINS static inline void qf_fill_bytes(uint8_t* dst, uint8_t value, size_t count) {
    for (size_t i = 0; i < count; i++) dst[i] = value;
}

QF_NO_MEMORY_BUILTINS
void qf_im2col_u8_scalar(const qf_conv_shape* s, const uint8_t* input, uint8_t zero_point, size_t row_begin,
                         size_t row_end, size_t kernel_row_bytes, size_t row_stride, uint8_t* patches) {
    const size_t C = s->channels, row_length = s->kernel_h * kernel_row_bytes;
    const size_t span = s->kernel_w * C;  // one kernel row of a patch: contiguous in NHWC when inside the image
    // (image, oy, ox) of the first row, then stepped: three 64-bit divisions per row cost more than its copy.
    size_t ox = row_begin % s->out_width, oy = (row_begin / s->out_width) % s->out_height;
    size_t image = row_begin / (s->out_width * s->out_height);
    for (size_t r = row_begin; r < row_end; r++) {
        if (r != row_begin && ++ox == s->out_width) {
            ox = 0;
            if (++oy == s->out_height) {
                oy = 0;
                image++;
            }
        }
        const uint8_t* image_base = input + image * s->height * s->width * C;
        uint8_t* dst = patches + (r - row_begin) * row_stride;
        const ptrdiff_t ix0 = (ptrdiff_t)(ox * s->stride_w) - (ptrdiff_t)s->pad_left;
        const int columns_inside = ix0 >= 0 && ix0 + (ptrdiff_t)s->kernel_w <= (ptrdiff_t)s->width;
        for (size_t ky = 0; ky < s->kernel_h; ky++) {
            const ptrdiff_t iy = (ptrdiff_t)(oy * s->stride_h + ky) - (ptrdiff_t)s->pad_top;
            const int row_inside = iy >= 0 && iy < (ptrdiff_t)s->height;
            if (row_inside && columns_inside) {
                qf_copy_bytes(dst, image_base + ((size_t)iy * s->width + (size_t)ix0) * C, span);
            } else {
                for (size_t kx = 0; kx < s->kernel_w; kx++) {
                    const ptrdiff_t ix = ix0 + (ptrdiff_t)kx;
                    if (row_inside && ix >= 0 && ix < (ptrdiff_t)s->width) {
                        qf_copy_bytes(dst + kx * C, image_base + ((size_t)iy * s->width + (size_t)ix) * C, C);
                    } else {
                        // Padding is real zero in the float model, which is the zero point in u8.
                        qf_fill_bytes(dst + kx * C, zero_point, C);
                    }
                }
            }
            qf_fill_bytes(dst + span, zero_point, kernel_row_bytes - span);
            dst += kernel_row_bytes;
        }
        qf_fill_bytes(dst, zero_point, row_stride - row_length);
    }
}

void qf_border_u8(const uint8_t* image, size_t height, size_t width, size_t pad_top, size_t pad_left,
                  size_t padded_height, size_t padded_width, uint8_t zero_point, uint8_t* padded) {
    memset(padded, zero_point, padded_height * padded_width);
    for (size_t y = 0; y < height; y++) memcpy(padded + (y + pad_top) * padded_width + pad_left, image + y * width, width);
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
