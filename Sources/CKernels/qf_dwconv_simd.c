// 3×3 depthwise convolution, AVX-512 and AVX2. Channels are the vector lanes (NHWC keeps them contiguous):
// per tap, 16 (8) input bytes are zero-extended and 16 (8) weights sign-extended to int32 and multiplied with
// vpmulld. The AVX-512 path is compiled for the same AVX-512 VNNI target as the GEMM (one dispatch level) but
// needs only AVX-512 F/BW.
#include <string.h>

#include "qf_dwconv_layout.h"
#include "qf_requant.h"

#if QF_X86

QF_TARGET_AVX512VNNI void qf_dwconv3x3_u8s8_avx512vnni(const qf_dwconv_shape* s, const uint8_t* input,
                                                       const void* packed, size_t row_begin, size_t row_end,
                                                       uint8_t* output, const qf_output_params* out) {
    const size_t C = s->channels;
    const size_t groups = (C + QF_DWCONV_GROUP_CHANNELS - 1) / QF_DWCONV_GROUP_CHANNELS;
    const __m512i input_zero = _mm512_set1_epi32(s->input_zero_point);
    const __m512i zero_point = _mm512_set1_epi32(out->zero_point);
    const __m512i lo = _mm512_set1_epi32(out->qmin - out->zero_point);
    const __m512i hi = _mm512_set1_epi32(out->qmax - out->zero_point);
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        for (size_t ox = 0; ox < s->out_width; ox++) {
            const uint8_t* taps[9];
            qf_dwconv_taps(s, image_base, oy, ox, taps);
            uint8_t* dst = output + (r * s->out_width + ox) * C;
            for (size_t g = 0; g < groups; g++) {
                const size_t c0 = g * QF_DWCONV_GROUP_CHANNELS;
                // Masked loads/stores for the last group never touch bytes past the pixel's channels.
                const size_t valid = C - c0 < 16 ? C - c0 : 16;
                const __mmask16 mask = (__mmask16)((1u << valid) - 1u);
                const uint8_t* group = (const uint8_t*)packed + g * QF_DW_GROUP_BYTES;
                const int32_t* header = (const int32_t*)group;
                const int8_t* w = (const int8_t*)(group + QF_DW_HEADER_BYTES);
                __m512i acc = _mm512_loadu_si512(header + QF_DW_BIAS * 16);
                for (int t = 0; t < 9; t++) {
                    const __m512i x = taps[t] ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, taps[t] + c0))
                                              : input_zero;
                    const __m512i wt = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(w + t * 16)));
                    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(x, wt));
                }
                const __m512i y = qf_requantize_avx512(acc, _mm512_loadu_si512(header + QF_DW_MULTIPLIER * 16),
                                                       _mm512_loadu_si512(header + QF_DW_LEFT_SHIFT * 16),
                                                       _mm512_loadu_si512(header + QF_DW_RIGHT_SHIFT * 16), lo, hi,
                                                       zero_point);
                _mm_mask_storeu_epi8(dst + c0, mask, _mm512_cvtepi32_epi8(y));
            }
        }
    }
}

QF_TARGET_AVX2 void qf_dwconv3x3_u8s8_avx2(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                                           size_t row_begin, size_t row_end, uint8_t* output,
                                           const qf_output_params* out) {
    const size_t C = s->channels;
    const __m256i input_zero = _mm256_set1_epi32(s->input_zero_point);
    const __m256i zero_point = _mm256_set1_epi32(out->zero_point);
    const __m256i lo = _mm256_set1_epi32(out->qmin - out->zero_point);
    const __m256i hi = _mm256_set1_epi32(out->qmax - out->zero_point);
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        for (size_t ox = 0; ox < s->out_width; ox++) {
            const uint8_t* taps[9];
            qf_dwconv_taps(s, image_base, oy, ox, taps);
            uint8_t* dst = output + (r * s->out_width + ox) * C;
            for (size_t c0 = 0; c0 < C; c0 += 8) {
                const size_t valid = C - c0 < 8 ? C - c0 : 8;
                const uint8_t* group = (const uint8_t*)packed + (c0 / 16) * QF_DW_GROUP_BYTES;
                const size_t lane0 = c0 % 16;
                const int32_t* header = (const int32_t*)group;
                const int8_t* w = (const int8_t*)(group + QF_DW_HEADER_BYTES);
                __m256i acc = _mm256_loadu_si256((const __m256i*)(header + QF_DW_BIAS * 16 + lane0));
                for (int t = 0; t < 9; t++) {
                    __m256i x = input_zero;
                    if (taps[t]) {
                        uint64_t bytes = 0;  // 8 channels, fewer at the end of the pixel (never read past it)
                        memcpy(&bytes, taps[t] + c0, valid);
                        x = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)bytes));
                    }
                    uint64_t wbytes;
                    memcpy(&wbytes, w + t * 16 + lane0, 8);
                    const __m256i wt = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128((long long)wbytes));
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(x, wt));
                }
                const __m256i y = qf_requantize_avx2(
                    acc, _mm256_loadu_si256((const __m256i*)(header + QF_DW_MULTIPLIER * 16 + lane0)),
                    _mm256_loadu_si256((const __m256i*)(header + QF_DW_LEFT_SHIFT * 16 + lane0)),
                    _mm256_loadu_si256((const __m256i*)(header + QF_DW_RIGHT_SHIFT * 16 + lane0)), lo, hi,
                    zero_point);
                uint8_t bytes[16];
                _mm_storeu_si128((__m128i*)bytes, qf_narrow_u8_avx2(y));
                memcpy(dst + c0, bytes, valid);
            }
        }
    }
}

#else
void qf_dwconv3x3_u8s8_avx512vnni(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                                  size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out) {
    qf_dwconv3x3_u8s8_scalar(s, input, packed, row_begin, row_end, output, out);
}
void qf_dwconv3x3_u8s8_avx2(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                            size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out) {
    qf_dwconv3x3_u8s8_scalar(s, input, packed, row_begin, row_end, output, out);
}
#endif
