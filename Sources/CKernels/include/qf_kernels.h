// qatflow int8 micro-kernels (u8 activations with zero point × s8 symmetric weights).
//
// Naming follows XNNPACK: qf_<op>_<datatypes>_<isa>. Every operation exists in three versions:
//   _scalar      portable C, any CPU;
//   _avx2        AVX2 (compiled with a function-level target attribute);
//   _avx512vnni  AVX-512 F/BW/VL + VNNI (function-level target attribute; the GEMM uses vpdpbusd).
// Nothing in this target is compiled with global ISA flags: calling an _avx2/_avx512vnni function on a CPU that
// lacks the ISA is the caller's bug. Use qf_cpu_has_avx2()/qf_cpu_has_avx512vnni() (the Swift `Kernels` target
// does the dispatch).
//
// Activation layout: NHWC (channels innermost). A 1×1 convolution over NHWC data is then a plain row-major GEMM:
// rows = pixels (batch·H·W), depth = input channels, columns = output channels, and its output is NHWC again.
//
// Requantization (one definition, shared by every kernel; see qf_requant.h for the exact integer code):
//   y = clamp(RDivPOT(SRDHM(x << left_shift, multiplier), right_shift) + output_zero_point, qmin, qmax)
// with gemmlowp's SaturatingRoundingDoublingHighMul and RoundingDivideByPOT, multiplier in [0, 2^31); every ISA
// version gives bit-identical results for accumulators |x| < 2^30 (K·255·127 < 2^30 up to K = 33,000).
#ifndef QF_KERNELS_H
#define QF_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- CPU features (checked with __builtin_cpu_supports; cheap, may be called often) ----
int qf_cpu_has_avx2(void);
int qf_cpu_has_avx512vnni(void);

// ---- Output stage shared by all kernels ----
typedef struct {
    int32_t zero_point;  // output zero point
    int32_t qmin;        // clamp range in the quantized domain, e.g. [0, 2^bits - 1], or [zp, 255] for ReLU
    int32_t qmax;
} qf_output_params;

// ---- GEMM u8 × s8 → s32 → requantized u8 (1×1 convolution, fully connected, im2col convolution) ----
//
// C[m][n] = requant_n( Σ_k (A[m][k] - a_zero_point) · W[n][k] + bias[n] )
// W is packed once by qf_gemm_u8s8_pack into panels of QF_GEMM_PANEL_COLUMNS output channels:
//   int32 bias_adjusted[16]   bias[n] - a_zero_point · Σ_k W[n][k]   (the zero point folded in at pack time)
//   int32 multiplier[16]      fixed-point multiplier per output channel
//   int32 left_shift[16]      max(shift, 0)
//   int32 right_shift[16]     max(-shift, 0)
//   int32 m2[16], m2_odd[16], int64 nudge_even[8], nudge_odd[8], int32 neg_fix[16], zero_point_folded[16]
//                             derived from the above and the output zero point for the VNNI epilogue
//                             (qf_gemm_layout.h, qf_requant.h)
//   int8  weights[ceil(k/4)][16][4]   four consecutive k of one channel in one 32-bit lane (vpdpbusd's layout),
//                                     k padded with zeros to a multiple of 4, channels padded with zero weights.
// Every panel is a multiple of 64 bytes, so the panels of a 64-byte aligned buffer stay aligned.
#define QF_GEMM_PANEL_COLUMNS 16

size_t qf_gemm_u8s8_packed_size(size_t n, size_t k);
size_t qf_gemm_u8s8_panel_size(size_t k);
// weights: n rows of k int8 values (row n = output channel n), bias: n int32 or NULL,
// multiplier/shift: n values each (shift > 0 means a left shift, TFLite's convention). out: the output stage the
// requantizing kernels will be called with (the VNNI epilogue may add its zero point in the rounding constants;
// the float-output kernels ignore it).
void qf_gemm_u8s8_pack(size_t n, size_t k, const int8_t* weights, const int32_t* bias, const int32_t* multiplier,
                       const int32_t* shift, int32_t a_zero_point, const qf_output_params* out, void* packed);

// A: m rows of k u8 values, row stride lda bytes; C: m rows of n u8 values, row stride ldc bytes.
// packed may point at any panel of a packed buffer (then n counts the columns from that panel on).
void qf_gemm_u8s8s32_scalar(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                            uint8_t* c, size_t ldc, const qf_output_params* out);
void qf_gemm_u8s8s32_avx2(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                          uint8_t* c, size_t ldc, const qf_output_params* out);
void qf_gemm_u8s8s32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                                uint8_t* c, size_t ldc, const qf_output_params* out);
// The same GEMM with a float output and no requantization: C[m][n] = float(Σ_k (A[m][k] − a_zero_point)·W[n][k]
// + bias[n]) · scales[n] (the int32 sum exact, one rounding to float, one float multiply), C row stride ldc floats.
// For a classifier whose logits stay float. The multipliers packed with W are not used.
void qf_gemm_u8s8f32_scalar(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                            const float* scales, float* c, size_t ldc);
void qf_gemm_u8s8f32_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda, const void* packed,
                                const float* scales, float* c, size_t ldc);
// The same GEMM with A's depth groups of 4 bytes `group_stride` bytes apart (row i, group g at a + i·lda +
// g·group_stride); k must be a multiple of 4 (at most 64 off x86). A convolution whose kernel rows are 4 bytes
// (one input channel, kernel width ≤ 4, rows padded to 4 taps) reads its patches straight from a zero-point
// bordered copy of the image this way: lda = stride, group_stride = the bordered width. No im2col.
void qf_gemm_u8s8s32_grouped_avx512vnni(size_t m, size_t n, size_t k, const uint8_t* a, size_t lda,
                                        size_t group_stride, const void* packed, uint8_t* c, size_t ldc,
                                        const qf_output_params* out);

// ---- im2col for u8 NHWC input (general convolution = im2col + GEMM) ----
// Writes rows [row_begin, row_end) of the patch matrix; row r = (image, oy, ox), columns ordered (ky, kx, c),
// so weights must be packed in [out][ky][kx][in] order. Out-of-image taps read the input zero point. Each kernel
// row takes `kernel_row_bytes` ≥ kernel_w·channels bytes and rows are `row_stride` ≥ kernel_h·kernel_row_bytes
// bytes apart; the bytes past a kernel row's or a row's patch are set to the zero point (the convolution pads
// with zero weights: its depth to a multiple of 4, and a stem's kernel rows to 4 taps).
typedef struct {
    size_t batch, height, width, channels;
    size_t kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left;
    size_t out_height, out_width;
} qf_conv_shape;
void qf_im2col_u8_scalar(const qf_conv_shape* shape, const uint8_t* input, uint8_t zero_point, size_t row_begin,
                         size_t row_end, size_t kernel_row_bytes, size_t row_stride, uint8_t* patches);
// A zero-point bordered copy of one u8 image of `channels` = 1: `padded_height × padded_width` bytes, input pixel
// (y, x) at (y + pad_top, x + pad_left), every other byte the zero point.
void qf_border_u8(const uint8_t* image, size_t height, size_t width, size_t pad_top, size_t pad_left,
                  size_t padded_height, size_t padded_width, uint8_t zero_point, uint8_t* padded);

// ---- 3×3 depthwise convolution, padding 1, stride 1 or 2, u8 × s8 → u8 (NHWC) ----
// The packed buffer holds two layouts of the same weights (a few KiB per layer):
//   generic (portable, AVX2): per group of 16 channels int32 bias_adjusted[16], multiplier[16], left_shift[16],
//     right_shift[16], int8 weights[9][16] (tap-major: one tap of 16 channels is one load);
//   VNNI, after it: per block of 64 channels the taps grouped in fours for vpdpbusd (qf_dwconv_layout.h).
// bias_adjusted = bias - input_zero_point · Σ(9 weights); padding taps read the zero point, so they add nothing.
#define QF_DWCONV_GROUP_CHANNELS 16
size_t qf_dwconv3x3_u8s8_packed_size(size_t channels);
// weights: channels × 9 int8 (ONNX [C][1][3][3]).
void qf_dwconv3x3_u8s8_pack(size_t channels, const int8_t* weights, const int32_t* bias, const int32_t* multiplier,
                            const int32_t* shift, int32_t input_zero_point, void* packed);
typedef struct {
    size_t batch, height, width, channels, stride;  // stride 1 or 2; padding is 1 on every side
    size_t out_height, out_width;
    int32_t input_zero_point;
} qf_dwconv_shape;
// Computes output rows [row_begin, row_end), row r = (image r / out_height, oy r % out_height).
void qf_dwconv3x3_u8s8_scalar(const qf_dwconv_shape* shape, const uint8_t* input, const void* packed,
                              size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out);
void qf_dwconv3x3_u8s8_avx2(const qf_dwconv_shape* shape, const uint8_t* input, const void* packed,
                            size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out);
void qf_dwconv3x3_u8s8_avx512vnni(const qf_dwconv_shape* shape, const uint8_t* input, const void* packed,
                                  size_t row_begin, size_t row_end, uint8_t* output, const qf_output_params* out);

// ---- Quantized Add of two u8 tensors (TFLite's fixed-point scheme) ----
// a' = (a - a_zp) << left_shift; y = MBQM(MBQM(a', a_mult, a_shift) + MBQM(b', b_mult, b_shift), out_mult, out_shift)
// then + output zero point and clamp (MBQM = MultiplyByQuantizedMultiplier; shifts are <= 0 here).
typedef struct {
    int32_t a_zero_point, b_zero_point;
    int32_t left_shift;                  // 20 in TFLite (headroom for the 8-bit differences)
    int32_t a_multiplier, a_shift;
    int32_t b_multiplier, b_shift;
    int32_t out_multiplier, out_shift;
} qf_add_params;
void qf_add_u8_scalar(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y, const qf_add_params* params,
                      const qf_output_params* out);
void qf_add_u8_avx2(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y, const qf_add_params* params,
                    const qf_output_params* out);
void qf_add_u8_avx512vnni(size_t count, const uint8_t* a, const uint8_t* b, uint8_t* y,
                          const qf_add_params* params, const qf_output_params* out);

// ---- Global average pool u8 NHWC [batch][pixels][channels] → u8 [batch][channels] ----
// y = requant(Σ_pixels x - pixels · input_zero_point) with multiplier ≈ s_in / (s_out · pixels).
typedef struct {
    int32_t input_zero_point;
    int32_t multiplier, shift;
} qf_gavgpool_params;
// QuantizeLinear of `count` floats into u8 with an output stride (one channel plane into NHWC storage):
// y[i·stride] = clamp(round_half_to_even(x[i] / scale) + zero_point, 0, high), NaN → zero_point. The same float
// operations as the float executor's QuantizeLinear (one IEEE division), so both engines agree bit for bit.
void qf_quantize_f32_u8(size_t count, const float* x, float scale, float zero_point, float high, uint8_t* y,
                        size_t stride);
// Exact per-channel sums of one image: sums[c] = Σ_pixels x[pixel][c] (int32; fine up to 2^23 pixels). Portable
// C that the compiler vectorises; the int8 executor's pool step rescales the sums itself (in double).
void qf_channel_sums_u8(size_t pixels, size_t channels, const uint8_t* x, int32_t* sums);
// That rescale: y[i] = clamp(round_half_to_even((sums[i] − offset) · scale) + zero_point, low, high), in double
// (portable C the compiler vectorises; the Swift loop it replaces was half of the int8 pool step's time).
void qf_rescale_sums_u8(size_t count, const int32_t* sums, int32_t offset, double scale, double zero_point,
                        double low, double high, uint8_t* y);
void qf_gavgpool_u8_scalar(size_t batch, size_t pixels, size_t channels, const uint8_t* x, uint8_t* y,
                           const qf_gavgpool_params* params, const qf_output_params* out);
void qf_gavgpool_u8_avx2(size_t batch, size_t pixels, size_t channels, const uint8_t* x, uint8_t* y,
                         const qf_gavgpool_params* params, const qf_output_params* out);
void qf_gavgpool_u8_avx512vnni(size_t batch, size_t pixels, size_t channels, const uint8_t* x, uint8_t* y,
                               const qf_gavgpool_params* params, const qf_output_params* out);

// ---- Benchmark support ----
// Runs iterations × 16 independent vpdpbusd (each 64 multiply-adds = 128 ops); only on AVX-512 VNNI CPUs.
int32_t qf_probe_dpbusd_avx512vnni(size_t iterations);

#ifdef __cplusplus
}
#endif
#endif
