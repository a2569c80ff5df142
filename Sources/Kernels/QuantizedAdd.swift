import CKernels
import Tensor

/// Elementwise `y = a + b` of two u8 tensors with their own scales and zero points, TFLite's fixed-point scheme:
///
///     a' = (a − z_a) · 2^20,  b' = (b − z_b) · 2^20                       (headroom for the rescale)
///     y  = clamp(MBQM(MBQM(a', s_a / 2m) + MBQM(b', s_b / 2m), 2m / (2^20 · s_y)) + z_y)   with m = max(s_a, s_b)
///
/// where `MBQM(x, r)` applies `QuantizedMultiplier(r)`. Both input rescales are ≤ ½, so the sum cannot overflow.
/// A fused ReLU is a clamp (`OutputQuantization.relu()`).
public struct QuantizedAdd: Sendable {
    public let aZeroPoint: UInt8
    public let bZeroPoint: UInt8
    public let aMultiplier: QuantizedMultiplier
    public let bMultiplier: QuantizedMultiplier
    public let outputMultiplier: QuantizedMultiplier
    public let output: OutputQuantization
    /// The left shift applied to both input differences (TFLite uses 20 for 8-bit inputs).
    public static let inputLeftShift: Int32 = 20

    public init(aScale: Double, aZeroPoint: UInt8, bScale: Double, bZeroPoint: UInt8, outputScale: Double,
                output: OutputQuantization) {
        precondition(aScale > 0 && bScale > 0 && outputScale > 0, "Add scales must be positive")
        let twiceMaxScale = 2 * max(aScale, bScale)
        self.aZeroPoint = aZeroPoint
        self.bZeroPoint = bZeroPoint
        aMultiplier = QuantizedMultiplier(aScale / twiceMaxScale)
        bMultiplier = QuantizedMultiplier(bScale / twiceMaxScale)
        outputMultiplier = QuantizedMultiplier(twiceMaxScale / (Double(1 << Self.inputLeftShift) * outputScale))
        self.output = output
    }

    /// `y[i] = a[i] + b[i]` for `count` elements (`y` may be `a` or `b`: each element is read before written).
    public func run(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>, count: Int,
                    output destination: UnsafeMutableBufferPointer<UInt8>, isa: KernelISA = .best,
                    threads: Int = 1) {
        precondition(count >= 0 && a.count >= count && b.count >= count && destination.count >= count,
                     "Add buffers hold fewer than \(count) elements")
        guard count > 0 else { return }
        isa.requireSupported()
        let sharedA = Parallel.SharedPointer(a.baseAddress!), sharedB = Parallel.SharedPointer(b.baseAddress!)
        let sharedY = Parallel.SharedMutablePointer(destination.baseAddress!)
        // Whole 64-element blocks per worker.
        let blocks = (count + 63) / 64
        let workers = Threading.workers(threads: threads, work: count, kind: .elementwise, isa: isa, parallelism: blocks)
        let frozen = qf_add_params(
            a_zero_point: Int32(aZeroPoint), b_zero_point: Int32(bZeroPoint), left_shift: Self.inputLeftShift,
            a_multiplier: aMultiplier.multiplier, a_shift: aMultiplier.shift,
            b_multiplier: bMultiplier.multiplier, b_shift: bMultiplier.shift,
            out_multiplier: outputMultiplier.multiplier, out_shift: outputMultiplier.shift)
        Parallel.forEachChunk(count: blocks, threads: workers) { blockRange in
            var parameters = frozen
            var out = self.output.cParameters
            let first = blockRange.lowerBound * 64, n = min(count, blockRange.upperBound * 64) - first
            let a = sharedA.base + first, b = sharedB.base + first, y = sharedY.base + first
            switch isa {
            case .portable: qf_add_u8_scalar(n, a, b, y, &parameters, &out)
            case .avx2: qf_add_u8_avx2(n, a, b, y, &parameters, &out)
            case .avx512vnni: qf_add_u8_avx512vnni(n, a, b, y, &parameters, &out)
            }
        }
    }
}
