// 3×3 depthwise convolution: weight packing and the portable kernel.
#include <string.h>

#include "qf_dwconv_layout.h"
#include "qf_requant.h"

size_t qf_dwconv3x3_u8s8_packed_size(size_t channels) {
    return (channels + QF_DWCONV_GROUP_CHANNELS - 1) / QF_DWCONV_GROUP_CHANNELS * QF_DW_GROUP_BYTES;
}

void qf_dwconv3x3_u8s8_pack(size_t channels, const int8_t* weights, const int32_t* bias, const int32_t* multiplier,
                            const int32_t* shift, int32_t input_zero_point, void* packed) {
    memset(packed, 0, qf_dwconv3x3_u8s8_packed_size(channels));
    for (size_t c = 0; c < channels; c++) {
        uint8_t* group = (uint8_t*)packed + (c / QF_DWCONV_GROUP_CHANNELS) * QF_DW_GROUP_BYTES;
        const size_t j = c % QF_DWCONV_GROUP_CHANNELS;
        int32_t* header = (int32_t*)group;
        int8_t* w = (int8_t*)(group + QF_DW_HEADER_BYTES);
        int32_t weight_sum = 0;
        for (int t = 0; t < 9; t++) {
            w[t * QF_DWCONV_GROUP_CHANNELS + j] = weights[c * 9 + t];
            weight_sum += weights[c * 9 + t];
        }
        // Every tap is treated as present; padding taps are compensated in the kernels (see qf_dwconv_taps).
        header[QF_DW_BIAS * QF_DWCONV_GROUP_CHANNELS + j] = (bias ? bias[c] : 0) - input_zero_point * weight_sum;
        header[QF_DW_MULTIPLIER * QF_DWCONV_GROUP_CHANNELS + j] = multiplier[c];
        header[QF_DW_LEFT_SHIFT * QF_DWCONV_GROUP_CHANNELS + j] = shift[c] > 0 ? shift[c] : 0;
        header[QF_DW_RIGHT_SHIFT * QF_DWCONV_GROUP_CHANNELS + j] = shift[c] < 0 ? -shift[c] : 0;
    }
}

void qf_dwconv3x3_u8s8_scalar(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                              size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out) {
    const size_t C = s->channels;
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        for (size_t ox = 0; ox < s->out_width; ox++) {
            const uint8_t* taps[9];
            qf_dwconv_taps(s, image_base, oy, ox, taps);
            uint8_t* dst = output + (r * s->out_width + ox) * C;
            for (size_t c = 0; c < C; c++) {
                const uint8_t* group = (const uint8_t*)packed + (c / QF_DWCONV_GROUP_CHANNELS) * QF_DW_GROUP_BYTES;
                const size_t j = c % QF_DWCONV_GROUP_CHANNELS;
                const int32_t* header = (const int32_t*)group;
                const int8_t* w = (const int8_t*)(group + QF_DW_HEADER_BYTES);
                int32_t acc = header[QF_DW_BIAS * QF_DWCONV_GROUP_CHANNELS + j];
                for (int t = 0; t < 9; t++) {
                    const int32_t x = taps[t] ? taps[t][c] : s->input_zero_point;
                    acc += x * w[t * QF_DWCONV_GROUP_CHANNELS + j];
                }
                dst[c] = qf_requantize_scalar(acc, header[QF_DW_MULTIPLIER * QF_DWCONV_GROUP_CHANNELS + j],
                                              header[QF_DW_LEFT_SHIFT * QF_DWCONV_GROUP_CHANNELS + j],
                                              header[QF_DW_RIGHT_SHIFT * QF_DWCONV_GROUP_CHANNELS + j], out);
            }
        }
    }
}
