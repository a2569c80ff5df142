// Kernels: the int8 micro-kernels of the int8 engine, behind a safe Swift API (module overview).
//
// Data layout
//   Activations are u8 NHWC (channels innermost), per-tensor (scale, zero point), range [0, 2^bits − 1].
//   NHWC makes a 1×1 convolution a plain row-major GEMM (rows = batch·H·W pixels, depth = C_in, columns = C_out)
//   whose output is NHWC again, lets the depthwise kernel vectorise over contiguous channels, and makes im2col
//   rows contiguous copies. Weights are s8, symmetric per output channel (zero point 0), narrow range.
//
// Operations (prepare once with `init`, which packs weights; `run` allocates nothing)
//   QuantizedGEMM                      1×1 convolution, fully connected (u8 × s8 → s32 → u8)
//   QuantizedDepthwiseConvolution3x3   3×3 depthwise, stride 1/2, padding 1
//   QuantizedConvolution               any group-1 convolution via im2col + QuantizedGEMM (the stem)
//   QuantizedAdd                       two u8 tensors with their own scales (TFLite fixed-point scheme)
//   QuantizedGlobalAveragePool         u8 NHWC → u8 [batch, channels]
//
// Requantization (every kernel, bit-exact across ISA paths)
//   acc = Σ (x − z_x)·w + bias                       exact int32 (the zero point is folded into the bias at pack time)
//   y   = RoundingDivideByPOT(SRDHM(acc << l, m), r) gemmlowp / TFLite MultiplyByQuantizedMultiplier, where
//                                                    QuantizedMultiplier(real) = (m, shift), l = max(shift, 0),
//                                                    r = max(−shift, 0); SRDHM rounds half up, the divide rounds
//                                                    half away from zero
//   out = clamp(y + z_out, min, max)                 OutputQuantization; ReLU/ReLU6/sub-8-bit ranges are the clamp
//
// ISA paths: KernelISA.portable / .avx2 / .avx512vnni, one C implementation each (CKernels, function-level target
// attributes, no global ISA flags), chosen per call (`isa:` defaults to `KernelISA.best`, detected once).
// Threads: `threads:` splits a call over `Parallel` workers only when each gets ≳ 10 µs of work.
