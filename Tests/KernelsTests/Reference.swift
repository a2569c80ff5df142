import Kernels
import XCTest

/// Deterministic random numbers (SplitMix64), so a failing case can be rerun exactly.
struct SeededRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476C_1E5C_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The requantization written the obvious way, straight from gemmlowp's fixedpoint.h (with its sign-dependent
/// nudge and truncating division), independent of the kernels' shortcuts.
enum Reference {
    static func saturatingRoundingDoublingHighMul(_ a: Int32, _ b: Int32) -> Int32 {
        if a == b && a == .min { return .max }
        let ab = Int64(a) * Int64(b)
        let nudge: Int64 = ab >= 0 ? 1 << 30 : 1 - (1 << 30)
        return Int32(truncatingIfNeeded: (ab + nudge) / (1 << 31))  // Swift's / truncates toward zero, like C++
    }

    static func roundingDivideByPOT(_ x: Int32, _ exponent: Int32) -> Int32 {
        let mask = Int32(truncatingIfNeeded: (Int64(1) << Int64(exponent)) - 1)
        let remainder = x & mask
        let threshold = (mask >> 1) + (x < 0 ? 1 : 0)
        return (x >> exponent) + (remainder > threshold ? 1 : 0)
    }

    static func multiply(_ x: Int32, by m: QuantizedMultiplier) -> Int32 {
        let shifted = x &<< max(m.shift, 0)  // wrapping, as TFLite
        return roundingDivideByPOT(saturatingRoundingDoublingHighMul(shifted, m.multiplier), max(-m.shift, 0))
    }

    /// An exact int64 accumulator (which must fit in int32) → clamped u8.
    static func requantize(_ accumulator: Int64, _ m: QuantizedMultiplier, _ out: OutputQuantization) -> UInt8 {
        guard let x = Int32(exactly: accumulator) else {
            XCTFail("accumulator \(accumulator) does not fit in int32")
            return 0
        }
        let y = Int64(multiply(x, by: m)) + Int64(out.zeroPoint)
        return UInt8(min(max(y, Int64(out.min)), Int64(out.max)))
    }
}

/// Test data helpers.
extension SeededRandom {
    mutating func bytes(_ count: Int, in range: ClosedRange<UInt8> = 0...255) -> [UInt8] {
        (0..<count).map { _ in UInt8.random(in: range, using: &self) }
    }

    /// Narrow-range weights for `bits` (±(2^(bits−1) − 1)), with the extremes over-represented: a quarter of the
    /// values are exactly ±max.
    mutating func weights(_ count: Int, bits: Int) -> [Int8] {
        let limit = Int8((1 << (bits - 1)) - 1)
        return (0..<count).map { _ in
            switch Int.random(in: 0..<8, using: &self) {
            case 0: return limit
            case 1: return -limit
            default: return Int8.random(in: -limit...limit, using: &self)
            }
        }
    }

    mutating func bias(_ count: Int, magnitude: Int32 = 20_000) -> [Int32] {
        (0..<count).map { _ in Int32.random(in: -magnitude...magnitude, using: &self) }
    }

    /// Multipliers that map a typical accumulator of `depth` products onto a few dozen output codes, so the
    /// outputs cover the whole range (neither all clamped nor all at the zero point).
    mutating func multipliers(_ count: Int, depth: Int, weightBits: Int) -> [QuantizedMultiplier] {
        let weightScale = Double((1 << (weightBits - 1)) - 1)
        return (0..<count).map { _ in
            // One channel in eight gets a multiplier ≥ 1 (a left shift), which the kernels handle separately.
            if Int.random(in: 0..<8, using: &self) == 0 {
                return QuantizedMultiplier(Double.random(in: 1...4, using: &self))
            }
            let typical = Double(depth).squareRoot() * weightScale * 70 + 1
            return QuantizedMultiplier(Double.random(in: 8...80, using: &self) / typical)
        }
    }

    /// An output range for `bits`-bit activations, randomly with ReLU fused or not.
    mutating func outputQuantization(bits: Int) -> OutputQuantization {
        let top = Int32((1 << bits) - 1)
        let zeroPoint = [0, top / 2, top][Int.random(in: 0..<3, using: &self)]
        let plain = OutputQuantization(zeroPoint: zeroPoint, bits: bits)
        return Bool.random(using: &self) ? plain.relu() : plain
    }
}

/// Runs the body once per ISA case listed in a test; skips (with the reason) when the CPU lacks the ISA.
func requireISA(_ isa: KernelISA) throws {
    try XCTSkipUnless(isa.isSupported, "this CPU does not support \(isa); its kernels are not exercised here")
}

/// Describes where two byte arrays first differ.
func firstMismatch(_ actual: [UInt8], _ expected: [UInt8]) -> String? {
    guard actual.count == expected.count else { return "count \(actual.count) vs \(expected.count)" }
    guard let i = actual.indices.first(where: { actual[$0] != expected[$0] }) else { return nil }
    let mismatches = zip(actual, expected).filter { $0 != $1 }.count
    return "\(mismatches) mismatches, first at \(i): got \(actual[i]), expected \(expected[i])"
}
