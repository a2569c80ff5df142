/// A positive real factor (typically `s_in · s_w / s_out`) as a fixed-point `multiplier · 2^(shift − 31)`,
/// the representation every kernel's requantization uses (TFLite's `QuantizeMultiplier`).
///
/// `multiplier` is in `[2^30, 2^31)` (or 0 for a zero factor), so it keeps 31 significant bits; `shift > 0`
/// means a left shift of the accumulator before the multiply, `shift < 0` a rounding right shift after it.
/// Applying it to an int32 `x` is gemmlowp's
/// `RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x << max(shift, 0), multiplier), max(−shift, 0))`:
/// the high-mul rounds half up, the divide rounds half away from zero.
public struct QuantizedMultiplier: Sendable, Equatable, CustomStringConvertible {
    public let multiplier: Int32
    public let shift: Int32

    /// Converts `real` (finite, ≥ 0, < 2^30). Factors below 2^-32 become 0, as in TFLite.
    public init(_ real: Double) {
        precondition(real.isFinite && real >= 0 && real < 1_073_741_824,
                     "multiplier \(real) is outside [0, 2^30)")
        guard real > 0 else {
            self.init(multiplier: 0, shift: 0)
            return
        }
        // frexp: real = fraction · 2^exponent with fraction in [0.5, 1).
        var exponent = Int(real.exponent) + 1
        let fraction = real.significand / 2
        var fixed = Int64((fraction * 2_147_483_648).rounded())
        if fixed == 1 << 31 {  // the fraction rounded up to 1.0
            fixed /= 2
            exponent += 1
        }
        if exponent < -31 {
            self.init(multiplier: 0, shift: 0)
            return
        }
        self.init(multiplier: Int32(fixed), shift: Int32(exponent))
    }

    /// Takes an already converted pair; `multiplier` must be ≥ 0 and `shift` in `-31...30`.
    public init(multiplier: Int32, shift: Int32) {
        precondition(multiplier >= 0, "quantized multiplier must be non-negative")
        precondition((-31...30).contains(shift), "quantized shift \(shift) outside -31...30")
        self.multiplier = multiplier
        self.shift = shift
    }

    /// The requantization multipliers of a convolution or GEMM: `s_in · s_w[c] / s_out` per output channel.
    public static func perChannel(inputScale: Double, weightScales: [Double], outputScale: Double)
        -> [QuantizedMultiplier] {
        precondition(inputScale > 0 && outputScale > 0, "scales must be positive")
        return weightScales.map { QuantizedMultiplier(inputScale * $0 / outputScale) }
    }

    /// The real factor this pair represents.
    public var realValue: Double { Double(multiplier) * pow2(Int(shift) - 31) }

    public var description: String { "\(multiplier)·2^(\(shift)-31)" }
}

private func pow2(_ exponent: Int) -> Double { Double(sign: .plus, exponent: exponent, significand: 1) }
