import CKernels

/// Fake quantization over float buffers, for quantization-aware training (C kernels in `CKernels`, chosen per
/// instruction set like the other FP32 kernels). The rounding is exactly round-half-to-even of `x / scale`, the
/// arithmetic of `AffineQuantization.quantize`, so QAT trains on the values the exported QDQ graph computes.
public enum FakeQuantizeKernel {
    /// `y = (clamp(round(x / scale) + zeroPoint, qmin, qmax) − zeroPoint) · scale` for `count` elements.
    public static func apply(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int, scale: Float,
                             zeroPoint: Float, qmin: Float, qmax: Float,
                             instructionSet: FP32InstructionSet = .preferred) {
        qf_fp32_fake_quantize(instructionSet.rawValue, x, y, count, scale, zeroPoint, qmin, qmax)
    }

    /// The straight-through gradient with clipping mask: `dx (+)= dy` where `x` quantizes without saturating,
    /// else 0; `accumulate` adds into `dx` instead of overwriting it.
    public static func maskGradient(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                                    count: Int, scale: Float, zeroPoint: Float, qmin: Float, qmax: Float, accumulate: Bool,
                                    instructionSet: FP32InstructionSet = .preferred) {
        qf_fp32_fake_quantize_mask_gradient(instructionSet.rawValue, x, dy, dx, count, scale, zeroPoint, qmin, qmax, accumulate ? 1 : 0)
    }

    /// ONNX QuantizeLinear with one grid as the float executor computes it (NaN → `zeroPoint`), followed by
    /// DequantizeLinear when `dequantize`: `q = clamp(round(x / scale) + zeroPoint, qmin, qmax)`, `y = q` or
    /// `(q − zeroPoint) · scale`. Unlike `apply`, a NaN does not survive (QAT needs NaN to reach the loss).
    public static func quantizeLinear(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int, scale: Float,
                                      zeroPoint: Float, qmin: Float, qmax: Float, dequantize: Bool,
                                      instructionSet: FP32InstructionSet = .preferred) {
        qf_fp32_quantize_linear(instructionSet.rawValue, x, y, count, scale, zeroPoint, qmin, qmax, dequantize ? 1 : 0)
    }

    /// The smallest and largest of `count ≥ 1` elements.
    public static func minMax(_ x: UnsafePointer<Float>, count: Int, instructionSet: FP32InstructionSet = .preferred) -> (low: Float, high: Float) {
        var low: Float = 0, high: Float = 0
        qf_fp32_min_max(instructionSet.rawValue, x, count, &low, &high)
        return (low, high)
    }
}
