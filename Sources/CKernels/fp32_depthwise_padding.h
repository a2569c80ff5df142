// The zero-bordered plane copy of the portable 3×3 depthwise kernels (forward and backward; internal header, not
// part of the CKernels module interface). The padded plane has rows of padded_width floats and padded_height rows:
// the input at (pad_top, pad_left), zeros around it, and room for every tap of every output.
#ifndef QF_FP32_DEPTHWISE_PADDING_H
#define QF_FP32_DEPTHWISE_PADDING_H

#include <stddef.h>
#include <string.h>

static inline ptrdiff_t padded_width(ptrdiff_t width, ptrdiff_t pad_left, ptrdiff_t out_width, int stride) {
    ptrdiff_t needed = (out_width - 1) * stride + 3;
    return pad_left + width > needed ? pad_left + width : needed;
}

static inline ptrdiff_t padded_height(ptrdiff_t height, ptrdiff_t pad_top, ptrdiff_t out_height, int stride) {
    ptrdiff_t needed = (out_height - 1) * stride + 3;
    return pad_top + height > needed ? pad_top + height : needed;
}

// The zero-bordered copy of the plane: only the border is zeroed, the interior is copied over.
static inline void fill_padded(const float* input, ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top,
                               ptrdiff_t pad_left, ptrdiff_t pw, ptrdiff_t ph, float* padded) {
    memset(padded, 0, sizeof(float) * (size_t)(pad_top * pw));
    for (ptrdiff_t y = 0; y < height; ++y) {
        float* row = padded + (y + pad_top) * pw;
        for (ptrdiff_t x = 0; x < pad_left; ++x) row[x] = 0.0f;
        memcpy(row + pad_left, input + y * width, sizeof(float) * (size_t)width);
        for (ptrdiff_t x = pad_left + width; x < pw; ++x) row[x] = 0.0f;
    }
    memset(padded + (pad_top + height) * pw, 0, sizeof(float) * (size_t)((ph - pad_top - height) * pw));
}

#endif
