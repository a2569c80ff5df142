// qatflow FP32 micro-kernels: GEMM (packed, register-blocked, cache-blocked) and 3×3 depthwise convolution.
//
// Every kernel exists per instruction set (XNNPACK naming: qf_fp32_<op>_<isa>):
//   portable   plain C with GCC/Clang vector extensions (SSE2 on a baseline x86-64 build, NEON on arm64);
//   avx2       AVX2 + FMA, function-level target attribute;
//   avx512     AVX-512F + FMA, function-level target attribute.
// Nothing is compiled with global ISA flags, so the binary runs on any x86-64: qf_fp32_best_isa() checks the CPU
// once (__builtin_cpu_supports) and callers pass the ISA they want; passing an ISA the CPU lacks is the caller's
// bug (tests force each supported one).
//
// Layouts (row-major, leading dimensions in elements):
//   packed A   the left-hand matrix (m × k) in panels of `row_tile` rows (qf_fp32_gemm_row_tile(isa)); panel p
//              starts at p·row_tile·k and holds, for each depth index kk, the row_tile values A[p·row_tile + r][kk]
//              (zero past the last row). Any depth slice of a panel is therefore contiguous, and the micro-kernel
//              reads one small broadcast per row and depth step.
//   B, C       plain row-major; B is packed internally, one column_tile-wide panel at a time (see fp32_gemm.c).
#ifndef QF_FP32_H
#define QF_FP32_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    QF_FP32_ISA_PORTABLE = 0,
    QF_FP32_ISA_AVX2 = 1,
    QF_FP32_ISA_AVX512 = 2,
};

// The best ISA this CPU supports (detected once; cheap afterwards).
int qf_fp32_best_isa(void);
// 1 when `isa` runs on this CPU.
int qf_fp32_isa_supported(int isa);

// Register tile of the GEMM micro-kernel for `isa`: rows of A (and C), columns of B (and C).
int qf_fp32_gemm_row_tile(int isa);
int qf_fp32_gemm_column_tile(int isa);

// Floats needed for `rows × depth` packed with `row_tile`.
size_t qf_fp32_packed_a_size(ptrdiff_t rows, ptrdiff_t depth, int row_tile);
// Packs A (rows × depth, leading dimension lda; or, when `transposed`, A is stored as depth × rows).
void qf_fp32_pack_a(ptrdiff_t rows, ptrdiff_t depth, const float* a, ptrdiff_t lda, int transposed, int row_tile,
                    float* packed);

// What happens to each finished C element (after the last depth block), in this order:
//   c = (accumulate ? c_old : 0) + Σ A·B;  c += bias[row] (if bias);  c = min(max(c, minimum), maximum) (if clamp).
// NaN passes through the clamp unchanged.
typedef struct {
    const float* bias;  // one value per row of C, or NULL
    float minimum;
    float maximum;
    int clamp;
} qf_fp32_epilogue;

// C[m × n] (+)= A · B with A packed for `isa` (row_tile of that ISA) and k ≥ 1. When transpose_b, `b` holds Bᵀ
// (n × k, leading dimension ldb). Single-threaded; callers split rows (in whole panels) or columns over threads.
// `epilogue` may be NULL. `stream_b`: B is read from memory rather than cache (training's large activations): B's
// rows are prefetched ahead and read in place only for a few row panels (fp32_gemm.c); the result is the same.
void qf_fp32_gemm(int isa, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* packed_a, const float* b,
                  ptrdiff_t ldb, int transpose_b, float* c, ptrdiff_t ldc, int accumulate,
                  const qf_fp32_epilogue* epilogue, int stream_b);

// C[m × n] += Σ_{s < segments} A_s · B_sᵀ, where A_s = a + s·a_stride is m × k (row stride lda) and
// B_s = b + s·b_stride is n × k (row stride ldb): both operands contiguous along k, as a 1×1 convolution's weight
// gradient over NCHW planes is (dW += dY_image · X_imageᵀ summed over images). No packing: the kernel takes dot
// products along k with vector accumulators and reduces them once per C element after all segments.
// Single-threaded; any m, n, k ≥ 0.
void qf_fp32_gemm_nt(int isa, ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t segments, const float* a,
                     ptrdiff_t lda, ptrdiff_t a_stride, const float* b, ptrdiff_t ldb, ptrdiff_t b_stride, float* c,
                     ptrdiff_t ldc);
void qf_fp32_gemm_nt_avx512(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, ptrdiff_t segments, const float* a, ptrdiff_t lda,
                            ptrdiff_t a_stride, const float* b, ptrdiff_t ldb, ptrdiff_t b_stride, float* c,
                            ptrdiff_t ldc);
// One channel plane of a 3×3 depthwise convolution (dilation 1, stride 1 or 2):
//   out[oy][ox] = clamp(bias + Σ w[ky][kx] · in[oy·stride + ky - pad_top][ox·stride + kx - pad_left])
// reading zero outside the input. `scratch` must hold qf_fp32_depthwise3x3_scratch_size(...) floats.
size_t qf_fp32_depthwise3x3_scratch_size(ptrdiff_t height, ptrdiff_t width, ptrdiff_t pad_top, ptrdiff_t pad_left,
                                         ptrdiff_t out_height, ptrdiff_t out_width, int stride);
void qf_fp32_depthwise3x3(int isa, const float* input, ptrdiff_t height, ptrdiff_t width, int stride,
                          ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                          const float* weights, float bias, float minimum, float maximum, int clamp,
                          float* output, float* scratch);
// Planes first_plane ..< first_plane + plane_count of an NCHW tensor (plane = n·channels + c, dense planes), each
// with its channel's 9 weights (weights + 9·c) and bias[c]: one call per thread instead of one per plane.
void qf_fp32_depthwise3x3_planes(int isa, const float* input, ptrdiff_t first_plane, ptrdiff_t plane_count,
                                 ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                 ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width, const float* weights,
                                 const float* bias, float minimum, float maximum, int clamp, float* output,
                                 float* scratch);

// Backward of qf_fp32_depthwise3x3_planes without clamp, for planes first_plane ..< first_plane + plane_count (plane =
// n·channels + c; `input`, `output_gradient` and `input_gradient` point at plane 0), stride 1 or 2, pad_top and
// pad_left in 0...2 (the padding below and right is implied by out_height and out_width):
//   weight_gradient[9c + 3ky + kx] += Σ dy[plane][oy][ox] · in[plane][oy·stride + ky − pad_top][ox·stride + kx − pad_left]
//   input_gradient[plane][y][x] (+)= Σ weights[9c + 3ky + kx] · dy[plane][oy][ox]
//                                    over oy·stride + ky − pad_top = y, ox·stride + kx − pad_left = x,
// summed over the range's planes of channel c. Either gradient may be NULL. The input gradient is stored (every
// element), or added to when `accumulate`. `scratch` holds qf_fp32_depthwise3x3_backward_scratch_size(...) floats.
// Single-threaded: callers give each thread whole images and its own weight gradient.
//
// `input_affine` (may be NULL): the convolution's input is not `input` itself but clamp(scale[c]·input + offset[c])
// (a BatchNorm output that was never stored, see qf_fp32_channel_affine); the kernel computes it plane by plane, with
// qf_fp32_channel_affine_planes, as it reads it. When its `gradient_sum` is set and the input gradient is stored
// (not `accumulate`), the kernel also adds BatchNorm's backward sums over the input gradient it wrote, as
// qf_fp32_batchnorm_gradient_sums(dy = input gradient, x = input) would, plane by plane in the same order.
typedef struct {
    const float* scale;   // per channel
    const float* offset;  // per channel
    float minimum;
    float maximum;
    int clamp;            // 0: no clamp
    double* gradient_sum; // per channel, or NULL
    double* gradient_dot; // per channel (with gradient_sum)
} qf_fp32_channel_affine;
size_t qf_fp32_depthwise3x3_backward_scratch_size(ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride,
                                                  ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                                  ptrdiff_t out_width);
// `output_gradient_affine` (may be NULL): the output gradient is not `output_gradient` itself but BatchNorm's input
// gradient gain[c]·d + slope[c]·x + constant[c], d = output_gradient through the mask of clamp(scale[c]·x + offset[c])
// (qf_fp32_batchnorm_input_gradient with x = the affine's `input`): a gradient that was never stored, computed
// chunk by chunk as the kernel reads it.
typedef struct {
    const float* input;     // BatchNorm's input x (the convolution's output), plane 0
    const float* scale;     // the clamp mask's scale and offset, per channel
    const float* offset;
    float minimum;
    float maximum;
    int clamp;
    const float* gain;      // per channel
    const float* slope;
    const float* constant;
} qf_fp32_gradient_affine;
void qf_fp32_depthwise3x3_backward(int isa, const float* input, const qf_fp32_channel_affine* input_affine,
                                   const float* output_gradient, const qf_fp32_gradient_affine* output_gradient_affine,
                                   const float* weights,
                                   ptrdiff_t first_plane, ptrdiff_t plane_count, ptrdiff_t channels,
                                   ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                   ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                   float* weight_gradient, float* input_gradient, int accumulate, float* scratch);

// Fake quantization (QAT): y = (clamp(round_half_even(x / scale) + zero_point, qmin, qmax) − zero_point) · scale,
// bit-identical to quantize-then-dequantize in float. The mask gradient writes (or, with `accumulate`, adds) dy
// where x quantizes without saturating and 0 elsewhere. min_max returns the smallest and largest element (n ≥ 1).
void qf_fp32_fake_quantize(int isa, const float* x, float* y, ptrdiff_t n, float scale, float zero_point, float qmin,
                           float qmax);
void qf_fp32_fake_quantize_mask_gradient(int isa, const float* x, const float* dy, float* dx, ptrdiff_t n, float scale,
                                         float zero_point, float qmin, float qmax, int accumulate);
void qf_fp32_min_max(int isa, const float* x, ptrdiff_t n, float* low, float* high);
// ONNX QuantizeLinear with one grid, as the float executor defines it: q = clamp(round_half_even(x / scale) +
// zero_point, qmin, qmax), NaN → zero_point; y = q, or with `dequantize` y = (q − zero_point) · scale (a
// QuantizeLinear → DequantizeLinear pair in one pass).
void qf_fp32_quantize_linear(int isa, const float* x, float* y, ptrdiff_t n, float scale, float zero_point, float qmin,
                             float qmax, int dequantize);

// y_p = clamp(scale[c]·x_p + offset[c]) for planes p = first ..< first + count of an NCHW tensor (c = p % channels),
// plane p read at x + p·size and written at y + (p − first)·size: the values of qf_fp32_batchnorm_apply, into a
// buffer that holds just these planes.
void qf_fp32_channel_affine_planes(int isa, const float* x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                                   ptrdiff_t size, const qf_fp32_channel_affine* affine, float* y);
// BatchNorm passes for training (fp32_batchnorm.c) over planes first ..< first + count of an NCHW tensor: plane p
// starts at p·size floats of each tensor argument and belongs to channel c = p % channels. With `clamp`, a fused
// clamp to [minimum, maximum] follows BN (ReLU/ReLU6), and the gradient passes through its mask
// d = (minimum < scale[c]·x + offset[c] < maximum) ? dy : 0 (NaN passes); without, d = dy. Each plane's sums are
// float (16 lanes), added to the double per-channel totals. Single-threaded; callers split planes over threads
// (each with its own totals).
//   statistics      sum[c] += Σ (x − shift[c]), squares[c] += Σ (x − shift[c])²
//   apply           y = scale[c]·x + offset[c], then clamped when `clamp` (NaN passes)
//   gradient_sums   sum[c] += Σ d, dot[c] += Σ d·x
//   input_gradient  dx (+)= gain[c]·d + slope[c]·x + constant[c] (stored unless `accumulate`)
void qf_fp32_batchnorm_statistics(int isa, const float* x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                                  ptrdiff_t size, const float* shift, double* sum, double* squares);
void qf_fp32_batchnorm_apply(int isa, const float* x, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                             ptrdiff_t size, const float* scale, const float* offset, float minimum, float maximum,
                             int clamp, float* y);
void qf_fp32_batchnorm_gradient_sums(int isa, const float* dy, const float* x, ptrdiff_t first, ptrdiff_t count,
                                     ptrdiff_t channels, ptrdiff_t size, const float* scale, const float* offset,
                                     float minimum, float maximum, int clamp, double* sum, double* dot);
void qf_fp32_batchnorm_input_gradient(int isa, const float* dy, const float* x, ptrdiff_t first, ptrdiff_t count,
                                      ptrdiff_t channels, ptrdiff_t size, const float* scale, const float* offset,
                                      float minimum, float maximum, int clamp, const float* gain, const float* slope,
                                      const float* constant, int accumulate, float* dx);
// The stored input gradient above for planes first ..< first + count, plane p written at dx + (p − first)·size.
void qf_fp32_gradient_affine_planes(int isa, const float* dy, ptrdiff_t first, ptrdiff_t count, ptrdiff_t channels,
                                    ptrdiff_t size, const qf_fp32_gradient_affine* affine, float* dx);

// ---- Internal: one micro-kernel per ISA, called by qf_fp32_gemm ----
// C tile (rows ≤ row_tile, columns ≤ column_tile) (+)= A panel slice (depth × row_tile) · B (depth rows, row
// stride `ldb`: column_tile for a packed, zero-padded panel); `load_c` adds the old C; `epilogue` (may be NULL) is
// applied when not NULL. Only the AVX-512 kernel reads unpacked B (ldb ≠ column_tile; masked loads past `columns`).
typedef void (*qf_fp32_gemm_tile_fn)(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c,
                                     ptrdiff_t ldc, int rows, int columns, int load_c,
                                     const qf_fp32_epilogue* epilogue);
void qf_fp32_gemm_tile_portable(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c,
                                ptrdiff_t ldc, int rows, int columns, int load_c, const qf_fp32_epilogue* epilogue);
void qf_fp32_gemm_tile_avx2(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c, ptrdiff_t ldc,
                            int rows, int columns, int load_c, const qf_fp32_epilogue* epilogue);
void qf_fp32_gemm_tile_avx512(ptrdiff_t depth, const float* a, const float* b, ptrdiff_t ldb, float* c,
                              ptrdiff_t ldc, int rows, int columns, int load_c, const qf_fp32_epilogue* epilogue);

// 3×3 depthwise on a zero-bordered plane (rows of `padded_width` floats, read with up to 64 floats of slack past
// the plane), `flat` is scratch for out_height·padded_width + 16 floats.
void qf_fp32_depthwise3x3_padded_avx512(const float* padded, ptrdiff_t padded_width, int stride,
                                        ptrdiff_t out_height, ptrdiff_t out_width, const float* weights, float bias,
                                        float minimum, float maximum, float* output, float* flat);

// The same straight from the unpadded plane (padding = masked-off lanes); returns 0 when the geometry is not one it
// handles (see fp32_depthwise_avx512.c), and the caller then uses the padded kernel.
int qf_fp32_depthwise3x3_direct_avx512(const float* input, ptrdiff_t height, ptrdiff_t width, int stride,
                                       ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                       ptrdiff_t out_width, const float* weights, float bias, float minimum,
                                       float maximum, float* output);
// qf_fp32_depthwise3x3_planes on AVX-512 without scratch (clamp already resolved to ±inf); 0 when unhandled.
int qf_fp32_depthwise3x3_planes_avx512(const float* input, ptrdiff_t first_plane, ptrdiff_t plane_count,
                                       ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width, int stride,
                                       ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                       ptrdiff_t out_width, const float* weights, const float* bias, float minimum,
                                       float maximum, float* output);

// Backward parts on AVX-512 (fp32_depthwise_backward_avx512.c), called by qf_fp32_depthwise3x3_backward for the
// geometries qf_fp32_depthwise3x3_backward_avx512_handles accepts. The weight gradient adds to 16-lane accumulators,
// `accumulators + 144·c + 16·tap`; the stride-2 input gradient is stored or, with `accumulate`, added.
int qf_fp32_depthwise3x3_backward_avx512_handles(int stride, ptrdiff_t width, ptrdiff_t out_width);
// `input` and `output_gradient` point at plane first_plane (its channel is first_plane % channels); so does the
// output gradient of qf_fp32_depthwise3x3_input_gradient_stride2_avx512 (its input gradient points at plane 0).
void qf_fp32_depthwise3x3_weight_gradient_avx512(const float* input, const float* output_gradient,
                                                 ptrdiff_t first_plane, ptrdiff_t plane_count, ptrdiff_t channels,
                                                 ptrdiff_t height, ptrdiff_t width, int stride, ptrdiff_t pad_top,
                                                 ptrdiff_t pad_left, ptrdiff_t out_height, ptrdiff_t out_width,
                                                 float* accumulators);
void qf_fp32_depthwise3x3_input_gradient_stride2_avx512(const float* output_gradient, const float* weights,
                                                        ptrdiff_t first_plane, ptrdiff_t plane_count,
                                                        ptrdiff_t channels, ptrdiff_t height, ptrdiff_t width,
                                                        ptrdiff_t pad_top, ptrdiff_t pad_left, ptrdiff_t out_height,
                                                        ptrdiff_t out_width, float* input_gradient, int accumulate);

#ifdef __cplusplus
}
#endif

#endif
