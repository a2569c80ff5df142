import Kernels

/// The per-channel requantization multipliers `s_in · s_w[c] / s_out` of a convolution or GEMM, represented so
/// that the kernels round once.
///
/// The kernels apply gemmlowp's `RoundingDivideByPOT(SRDHM(acc, m), r)`. With the usual representation
/// (`QuantizedMultiplier(real)`: `m ∈ [2^30, 2^31)`, `r = −exponent`) the high multiply already rounds to an
/// integer, which then gets divided by `2^r` and rounded again: a result within `2^−(r+1)` of a half rounds the
/// wrong way. On MobileNetV2-FMNIST that flips ~2 % of the codes of every layer against the QDQ simulation
/// (exact accumulator, one round-half-to-even), and the flips compound to ~0.8 % top-1 disagreement.
///
/// A factor below ½ is therefore written as `m = round(real · 2^31)` with `r = 0`: one rounding (half up) and
/// still ≥ 20 significant bits, i.e. an error below 255 · 2^−21 ≈ 0.0001 of a code. Tiny factors (< 2^−11),
/// where that would cost precision, and factors ≥ ½ (no right shift anyway) keep the usual form.
enum Int8Requantization {
    static func multipliers(inputScale: Float, weightScales: [Float], outputScale: Float) -> [QuantizedMultiplier] {
        weightScales.map { weightScale in
            singleRounding(Double(inputScale) * Double(weightScale) / Double(outputScale))
        }
    }

    static func singleRounding(_ real: Double) -> QuantizedMultiplier {
        let fixed = (real * 2_147_483_648).rounded()
        guard real < 0.5, fixed >= Double(1 << 20) else { return QuantizedMultiplier(real) }
        return QuantizedMultiplier(multiplier: Int32(fixed), shift: 0)
    }
}
