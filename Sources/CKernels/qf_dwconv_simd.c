// 3×3 depthwise convolution, AVX-512 VNNI and AVX2. Channels are the vector lanes (NHWC keeps them contiguous).
// AVX-512 VNNI: 64 channels per step, four taps per vpdpbusd after an in-register interleave (layout in
// qf_dwconv_layout.h). AVX2: 8 channels per step, inputs zero-extended and weights sign-extended to int32 and
// multiplied with vpmulld, one tap at a time.
#include <string.h>

#include "qf_dwconv_layout.h"
#include "qf_requant.h"

#if QF_X86

// Four taps (64 channels each) → R_0..R_3 of the VNNI layout: byte-interleave taps (0,1) and (2,3) into
// 16-bit pairs, then the pairs into 4-byte quads. Both steps stay inside 128-bit lanes (see qf_dwconv_layout.h).
QF_TARGET_AVX512VNNI static inline void qf_dwv_interleave(__m512i t0, __m512i t1, __m512i t2, __m512i t3,
                                                         __m512i r[4]) {
    const __m512i lo01 = _mm512_unpacklo_epi8(t0, t1), hi01 = _mm512_unpackhi_epi8(t0, t1);
    const __m512i lo23 = _mm512_unpacklo_epi8(t2, t3), hi23 = _mm512_unpackhi_epi8(t2, t3);
    r[0] = _mm512_unpacklo_epi16(lo01, lo23);
    r[1] = _mm512_unpackhi_epi16(lo01, lo23);
    r[2] = _mm512_unpacklo_epi16(hi01, hi23);
    r[3] = _mm512_unpackhi_epi16(hi01, hi23);
}

// Requantizes the four accumulators of one pixel's 64-channel block and stores them in channel order.
QF_TARGET_AVX512VNNI static inline void qf_dwv_store(const __m512i acc[4], const int32_t* header, uint8_t* dst,
                                                    __mmask64 mask, __m512i lo, __m512i hi, __m512i zero_point) {
    __m512i y[4];
    for (int j = 0; j < 4; j++) {
        const int32_t* rows = header + j * QF_DWV_HEADER_ROWS * 16;
        const __m512i left = _mm512_loadu_si512(rows + QF_DWV_LEFT_SHIFT * 16);
        const __m512i right = _mm512_loadu_si512(rows + QF_DWV_RIGHT_SHIFT * 16);
        __m512i v = acc[j];
        if (_mm512_test_epi32_mask(left, left)) v = _mm512_sllv_epi32(v, left);
        v = qf_multiply_shift_avx512(v, _mm512_loadu_si512(rows + QF_DWV_MULTIPLIER * 16),
                                     _mm512_loadu_si512(rows + QF_DWV_MULTIPLIER_ODD * 16),
                                     _mm512_loadu_si512(rows + QF_DWV_NUDGE_EVEN * 16),
                                     _mm512_loadu_si512(rows + QF_DWV_NUDGE_ODD * 16), right,
                                     _mm512_test_epi32_mask(right, right));
        y[j] = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, lo), hi), zero_point);
    }
    // In-lane packs undo the interleave: lane L of the result holds channels 16L..16L+15 in order.
    const __m512i bytes = _mm512_packus_epi16(_mm512_packs_epi32(y[0], y[1]), _mm512_packs_epi32(y[2], y[3]));
    _mm512_mask_storeu_epi8(dst, mask, bytes);
}

// 64 channels of one output pixel with vpdpbusd: 12 multiply-accumulate instructions for 9 taps × 64 channels.
QF_TARGET_AVX512VNNI static inline void qf_dwv_pixel(const uint8_t* const taps[9], size_t c0, __mmask64 mask,
                                                    __m512i zero_vector, const uint8_t* block, uint8_t* dst,
                                                    __m512i lo, __m512i hi, __m512i zero_point) {
    const int32_t* header = (const int32_t*)block;
    const uint8_t* w = block + QF_DWV_HEADER_BYTES;
    __m512i x[9];
    for (int t = 0; t < 9; t++) x[t] = taps[t] ? _mm512_maskz_loadu_epi8(mask, taps[t] + c0) : zero_vector;
    __m512i acc[4], r[4];
    for (int j = 0; j < 4; j++) acc[j] = _mm512_loadu_si512(header + (j * QF_DWV_HEADER_ROWS + QF_DWV_BIAS) * 16);
    qf_dwv_interleave(x[0], x[1], x[2], x[3], r);
    for (int j = 0; j < 4; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], r[j], _mm512_loadu_si512(w + (0 * 4 + j) * 64));
    qf_dwv_interleave(x[4], x[5], x[6], x[7], r);
    for (int j = 0; j < 4; j++) acc[j] = _mm512_dpbusd_epi32(acc[j], r[j], _mm512_loadu_si512(w + (1 * 4 + j) * 64));
    // Tap 8 alone: vpshufb moves byte 4j+k of each 128-bit lane to byte 0 of dword k and zeroes the rest.
    for (int j = 0; j < 4; j++) {
        const int b = 4 * j;
        const __m512i pick = _mm512_set4_epi32((int32_t)(0x80808000u | (uint32_t)(b + 3)),
                                               (int32_t)(0x80808000u | (uint32_t)(b + 2)),
                                               (int32_t)(0x80808000u | (uint32_t)(b + 1)),
                                               (int32_t)(0x80808000u | (uint32_t)b));
        acc[j] = _mm512_dpbusd_epi32(acc[j], _mm512_shuffle_epi8(x[8], pick),
                                     _mm512_loadu_si512(w + (2 * 4 + j) * 64));
    }
    qf_dwv_store(acc, header, dst + c0, mask, lo, hi, zero_point);
}

// Two neighbouring output pixels (stride 1): `columns[ky][q]` is input column ox−1+q of kernel row ky (NULL
// outside the image).
QF_TARGET_AVX512VNNI static inline void qf_dwv_pixel_pair(const uint8_t* const columns[3][4], size_t c0,
                                                         __mmask64 mask, __m512i zero_vector, const uint8_t* block,
                                                         uint8_t* dst_left, uint8_t* dst_right, __m512i lo,
                                                         __m512i hi, __m512i zero_point) {
    const int32_t* header = (const int32_t*)block;
    const uint8_t* w = block + QF_DWV_HEADER_BYTES + QF_DWV_WEIGHT_BYTES;
    __m512i acc_left[4], acc_right[4], r[4];
    for (int j = 0; j < 4; j++) {
        acc_left[j] = acc_right[j] = _mm512_loadu_si512(header + (j * QF_DWV_HEADER_ROWS + QF_DWV_BIAS) * 16);
    }
    for (int ky = 0; ky < 3; ky++) {
        __m512i x[4];
        for (int q = 0; q < 4; q++) {
            x[q] = columns[ky][q] ? _mm512_maskz_loadu_epi8(mask, columns[ky][q] + c0) : zero_vector;
        }
        qf_dwv_interleave(x[0], x[1], x[2], x[3], r);
        for (int j = 0; j < 4; j++) {
            acc_left[j] = _mm512_dpbusd_epi32(acc_left[j], r[j], _mm512_loadu_si512(w + ((ky * 2 + 0) * 4 + j) * 64));
            acc_right[j] = _mm512_dpbusd_epi32(acc_right[j], r[j], _mm512_loadu_si512(w + ((ky * 2 + 1) * 4 + j) * 64));
        }
    }
    qf_dwv_store(acc_left, header, dst_left + c0, mask, lo, hi, zero_point);
    qf_dwv_store(acc_right, header, dst_right + c0, mask, lo, hi, zero_point);
}

QF_TARGET_AVX512VNNI void qf_dwconv3x3_u8s8_avx512vnni(const qf_dwconv_shape* s, const uint8_t* input,
                                                       const void* packed, size_t row_begin, size_t row_end,
                                                       uint8_t* output, const qf_output_params* out) {
    const size_t C = s->channels;
    const uint8_t* region = (const uint8_t*)packed + qf_dw_generic_bytes(C);
    const __m512i zero_vector = _mm512_set1_epi8((char)s->input_zero_point);
    const __m512i zero_point = _mm512_set1_epi32(out->zero_point);
    const __m512i lo = _mm512_set1_epi32(out->qmin - out->zero_point);
    const __m512i hi = _mm512_set1_epi32(out->qmax - out->zero_point);
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        size_t ox = 0;
        if (s->stride == 1) {
            for (; ox + 2 <= s->out_width; ox += 2) {
                const uint8_t* columns[3][4];
                for (int ky = 0; ky < 3; ky++) {
                    const ptrdiff_t iy = (ptrdiff_t)oy - 1 + ky;
                    for (int q = 0; q < 4; q++) {
                        const ptrdiff_t ix = (ptrdiff_t)ox - 1 + q;
                        const int inside = iy >= 0 && iy < (ptrdiff_t)s->height && ix >= 0 && ix < (ptrdiff_t)s->width;
                        columns[ky][q] = inside ? image_base + ((size_t)iy * s->width + (size_t)ix) * C : NULL;
                    }
                }
                uint8_t* dst = output + (r * s->out_width + ox) * C;
                for (size_t c0 = 0; c0 < C; c0 += QF_DWV_BLOCK_CHANNELS) {
                    const size_t valid = C - c0 < 64 ? C - c0 : 64;
                    const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
                    qf_dwv_pixel_pair(columns, c0, mask, zero_vector, region + (c0 / 64) * QF_DWV_BLOCK_BYTES, dst,
                                      dst + C, lo, hi, zero_point);
                }
            }
        }
        for (; ox < s->out_width; ox++) {  // stride 2, and the last pixel of an odd row
            const uint8_t* taps[9];
            qf_dwconv_taps_fast(s, image_base, oy, ox, taps);
            uint8_t* dst = output + (r * s->out_width + ox) * C;
            for (size_t c0 = 0; c0 < C; c0 += QF_DWV_BLOCK_CHANNELS) {
                const size_t valid = C - c0 < 64 ? C - c0 : 64;
                const __mmask64 mask = valid == 64 ? ~(__mmask64)0 : (((__mmask64)1 << valid) - 1);
                qf_dwv_pixel(taps, c0, mask, zero_vector, region + (c0 / 64) * QF_DWV_BLOCK_BYTES, dst, lo, hi,
                             zero_point);
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
            qf_dwconv_taps_fast(s, image_base, oy, ox, taps);
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
