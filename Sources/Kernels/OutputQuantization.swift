import CKernels

/// The output stage shared by every kernel: the output zero point and the clamp range in the quantized domain.
///
/// Activation functions and narrow activation types fold into the clamp: a `b`-bit activation is `[0, 2^b − 1]`,
/// ReLU raises the lower bound to the zero point (real 0), ReLU6 lowers the upper bound to the code of real 6.
public struct OutputQuantization: Sendable, Equatable {
    public let zeroPoint: Int32
    public let min: Int32
    public let max: Int32

    /// `min ≤ max`, all three within `0...255`.
    public init(zeroPoint: Int32, min: Int32 = 0, max: Int32 = 255) {
        precondition((0...255).contains(zeroPoint), "output zero point \(zeroPoint) outside 0...255")
        precondition(0 <= min && min <= max && max <= 255, "output clamp [\(min), \(max)] outside 0...255")
        self.zeroPoint = zeroPoint
        self.min = min
        self.max = max
    }

    /// The full range of a `bits`-bit unsigned activation, `[0, 2^bits − 1]` (bits 2…8).
    public init(zeroPoint: Int32, bits: Int) {
        precondition((2...8).contains(bits), "activation bits \(bits) outside 2...8")
        self.init(zeroPoint: zeroPoint, min: 0, max: Int32((1 << bits) - 1))
    }

    /// This range with `Clip(realMin, realMax)` fused (nil = unbounded), for an output of scale `scale`.
    /// Quantization is monotone, so `Q(clip(x, a, b)) = clamp(Q(x), Q(a), Q(b))` with `Q(v) = round(v / s) + z`
    /// rounded half to even like ONNX QuantizeLinear; the result is intersected with the current range.
    public func clipped(realMin: Double?, realMax: Double?, scale: Double) -> OutputQuantization {
        precondition(scale > 0, "output scale must be positive")
        func code(_ real: Double) -> Double { Double(zeroPoint) + (real / scale).rounded(.toNearestOrEven) }
        var lower = min, upper = max
        if let realMin { lower = Int32(Swift.min(Double(max), Swift.max(Double(min), code(realMin)))) }
        if let realMax { upper = Int32(Swift.min(Double(max), Swift.max(Double(lower), code(realMax)))) }
        return OutputQuantization(zeroPoint: zeroPoint, min: lower, max: Swift.max(lower, upper))
    }

    /// This range with ReLU fused: nothing below the code of real 0 (the zero point).
    public func relu() -> OutputQuantization {
        OutputQuantization(zeroPoint: zeroPoint, min: Swift.min(Swift.max(min, zeroPoint), max), max: max)
    }

    /// This range with ReLU6 fused: codes of reals in `[0, 6]` only (`scale` is the output scale).
    public func relu6(scale: Double) -> OutputQuantization { clipped(realMin: 0, realMax: 6, scale: scale) }

    var cParameters: qf_output_params { qf_output_params(zero_point: zeroPoint, qmin: min, qmax: max) }
}
