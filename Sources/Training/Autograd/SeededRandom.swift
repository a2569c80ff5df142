import Datasets
import Foundation

/// A small, fast, seedable generator (SplitMix64) so that a training run is a pure function of its seed:
/// weight initialisation, shuffling, augmentation and Dropout all draw from streams derived from one seed.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var generator: SplitMix64

    public init(seed: UInt64) {
        generator = SplitMix64(seed: seed)
    }

    /// An independent stream for a named purpose (so adding a consumer does not shift the others' draws).
    public func derived(_ purpose: UInt64) -> SeededRandom {
        var copy = SeededRandom(seed: generator.state ^ (purpose &* 0x9E37_79B9_7F4A_7C15))
        _ = copy.next()
        return copy
    }

    public mutating func next() -> UInt64 { generator.next() }

    /// Uniform in [0, 1) with 24 random bits (exactly representable).
    public mutating func nextUniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// Standard normal (Box–Muller, computed in Double).
    public mutating func nextNormal() -> Float {
        let u1 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        let radius = (-2 * log(max(u1, 1e-300))).squareRoot()
        return Float(radius * cos(2 * Double.pi * u2))
    }

    /// Uniform integer in `0..<upperBound`.
    public mutating func nextInt(below upperBound: Int) -> Int {
        Int(next() % UInt64(upperBound))
    }
}
