// 3×3 depthwise convolution: weight packing and the portable kernel.
#include <string.h>

#include "qf_dwconv_layout.h"
#include "qf_gemm_layout.h"
#include "qf_requant.h"

size_t qf_dwconv3x3_u8s8_packed_size(size_t channels) {
    return qf_dw_generic_bytes(channels) + qf_dwv_blocks(channels) * QF_DWV_BLOCK_BYTES;
}

// The VNNI region (layout in qf_dwconv_layout.h).
static void qf_dwconv3x3_pack_vnni(size_t channels, const int8_t* weights, const int32_t* bias,
                                   const int32_t* multiplier, const int32_t* shift, int32_t input_zero_point,
                                   uint8_t* region) {
    for (size_t block = 0; block < qf_dwv_blocks(channels); block++) {
        uint8_t* base = region + block * QF_DWV_BLOCK_BYTES;
        int32_t* header = (int32_t*)base;
        int8_t* w = (int8_t*)(base + QF_DWV_HEADER_BYTES);
        const size_t pixels = qf_dwv_block_pixels(channels, block);
        for (size_t j = 0; j < 4; j++) {
            int32_t* rows = header + j * QF_DWV_HEADER_ROWS * 16;
            for (size_t i = 0; i < 16; i++) {
                const size_t c = block * QF_DWV_BLOCK_CHANNELS + qf_dwv_channel(j, i, pixels);
                if (c >= channels) continue;  // padding channels: zero weights, zero multiplier
                int32_t weight_sum = 0;
                int8_t* pair = w + QF_DWV_WEIGHT_BYTES;
                for (int t = 0; t < 9; t++) {
                    const size_t quad = (size_t)t / 4, position = (size_t)t % 4;
                    w[(quad * 4 + j) * 64 + i * 4 + position] = weights[c * 9 + t];
                    weight_sum += weights[c * 9 + t];
                    const size_t ky = (size_t)t / 3, kx = (size_t)t % 3;
                    pair[((ky * 2 + 0) * 4 + j) * 64 + i * 4 + kx] = weights[c * 9 + t];      // left pixel
                    pair[((ky * 2 + 1) * 4 + j) * 64 + i * 4 + kx + 1] = weights[c * 9 + t];  // right pixel
                }
                const int32_t right = shift[c] < 0 ? -shift[c] : 0;
                rows[QF_DWV_BIAS * 16 + i] = (bias ? bias[c] : 0) - input_zero_point * weight_sum;
                rows[QF_DWV_LEFT_SHIFT * 16 + i] = shift[c] > 0 ? shift[c] : 0;
                rows[QF_DWV_RIGHT_SHIFT * 16 + i] = right;
                qf_requant_hi_set(rows + QF_DWV_M2 * 16, rows + QF_DWV_M2_ODD * 16, rows + QF_DWV_NUDGE_EVEN * 16,
                                  rows + QF_DWV_NUDGE_ODD * 16, rows + QF_DWV_NEG_FIX * 16, i, multiplier[c], right,
                                  0);
            }
        }
    }
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
    qf_dwconv3x3_pack_vnni(channels, weights, bias, multiplier, shift, input_zero_point,
                           (uint8_t*)packed + qf_dw_generic_bytes(channels));
}

void qf_dwconv3x3_u8s8_scalar(const qf_dwconv_shape* s, const uint8_t* input, const void* packed,
                              size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out) {
    const size_t C = s->channels;
    for (size_t r = row_begin; r < row_end; r++) {
        const size_t image = r / s->out_height, oy = r % s->out_height;
        const uint8_t* image_base = input + image * s->height * s->width * C;
        for (size_t ox = 0; ox < s->out_width; ox++) {
            const uint8_t* taps[9];
            qf_dwconv_taps_fast(s, image_base, oy, ox, taps);
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
