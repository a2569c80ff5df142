import Tensor
import XCTest

/// `BatchNormalizationKernel` (the C kernels behind BatchNorm's training passes) against a double-precision
/// reference, on every instruction set this CPU runs: plane sizes below, at and past the 16-lane step (tails), plane
/// ranges that start and end inside an image (the channel of the first plane is not 0), with and without the fused
/// clamp (values placed exactly on the clamp bounds and at NaN, where the mask's rule matters), stored and
/// accumulated input gradients, and a guard element past every output.
final class BatchNormalizationKernelTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var channels: Int, planeSize: Int, planes: Range<Int>
        var clamp: BatchNormalizationKernel.Clamp?
        var description: String {
            "\(channels) channels, planes \(planes) of \(planeSize), clamp \(clamp.map { "\($0.lower)...\($0.upper)" } ?? "none")"
        }
    }

    /// Inputs with a few elements whose affine image lands exactly on a clamp bound (scale 1, offset 0 on channel 0
    /// makes u = x there) or is NaN.
    func inputs(_ c: Case, seed: UInt64) -> (x: [Float], dy: [Float], scale: [Float], offset: [Float]) {
        let count = c.planes.upperBound * c.planeSize
        var x = randomValues(count, seed: seed, range: -2...8)
        let dy = randomValues(count, seed: seed + 1)
        var scale = randomValues(c.channels, seed: seed + 2, range: 0.5...1.5)
        var offset = randomValues(c.channels, seed: seed + 3, range: -0.5...0.5)
        scale[0] = 1
        offset[0] = 0
        for p in c.planes where p % c.channels == 0 {
            let base = p * c.planeSize
            x[base] = c.clamp?.lower ?? 0
            if c.planeSize > 1 { x[base + 1] = c.clamp.map { $0.upper.isFinite ? $0.upper : 6 } ?? 6 }
            if c.planeSize > 2 { x[base + 2] = .nan }
        }
        return (x, dy, scale, offset)
    }

    /// The fused clamp's mask in Double: dy where lower < u < upper (u NaN passes), u computed as the kernel does
    /// in float (x·scale, rounded, + offset, rounded), so the decision at the bounds is the kernel's.
    func maskedGradient(_ dy: Float, _ x: Float, _ scale: Float, _ offset: Float, _ clamp: BatchNormalizationKernel.Clamp?) -> Double {
        guard let clamp else { return Double(dy) }
        let u = x * scale + offset
        return (u <= clamp.lower || u >= clamp.upper) ? 0 : Double(dy)
    }

    func check(_ c: Case, isa: FP32InstructionSet, accumulate: Bool, seed: UInt64) {
        let (x, dy, scale, offset) = inputs(c, seed: seed)
        let context = "\(isa) \(c) accumulate \(accumulate)"
        let shift = randomValues(c.channels, seed: seed + 4)
        let gain = randomValues(c.channels, seed: seed + 5), slope = randomValues(c.channels, seed: seed + 6)
        let constant = randomValues(c.channels, seed: seed + 7)
        let initialSums = randomValues(4 * c.channels, seed: seed + 8).map(Double.init)
        // The reductions get the input without its NaNs (a NaN total only says NaN); apply and the input gradient
        // get the NaNs too.
        let finiteX = x.map { $0.isNaN ? 0.25 : $0 }

        var sums = initialSums
        var y = [Float](repeating: .nan, count: x.count + 1)
        var dx = (accumulate ? randomValues(x.count, seed: seed + 9) : [Float](repeating: .nan, count: x.count)) + [42]
        let initialDX = dx
        sums.withUnsafeMutableBufferPointer { s in
            BatchNormalizationKernel.statistics(finiteX, planes: c.planes, channels: c.channels, planeSize: c.planeSize,
                                                shift: shift, sum: s.baseAddress!, squares: s.baseAddress! + c.channels,
                                                instructionSet: isa)
            BatchNormalizationKernel.gradientSums(outputGradient: dy, input: finiteX, planes: c.planes, channels: c.channels,
                                                  planeSize: c.planeSize, scale: scale, offset: offset, clamp: c.clamp,
                                                  sum: s.baseAddress! + 2 * c.channels, dot: s.baseAddress! + 3 * c.channels,
                                                  instructionSet: isa)
        }
        BatchNormalizationKernel.apply(x, planes: c.planes, channels: c.channels, planeSize: c.planeSize, scale: scale,
                                       offset: offset, clamp: c.clamp, into: &y, instructionSet: isa)
        BatchNormalizationKernel.inputGradient(outputGradient: dy, input: x, planes: c.planes, channels: c.channels,
                                               planeSize: c.planeSize, scale: scale, offset: offset, clamp: c.clamp,
                                               gain: gain, slope: slope, constant: constant, accumulate: accumulate,
                                               into: &dx, instructionSet: isa)

        // Reference totals (value and sum of absolute terms, the scale of the float rounding error).
        var expected = [Double](repeating: 0, count: 4 * c.channels), magnitude = expected
        for p in c.planes {
            let ch = p % c.channels
            for i in p * c.planeSize..<(p + 1) * c.planeSize {
                let d = Double(finiteX[i]) - Double(shift[ch])
                expected[ch] += d; magnitude[ch] += abs(d)
                expected[c.channels + ch] += d * d; magnitude[c.channels + ch] += d * d
                let g = maskedGradient(dy[i], finiteX[i], scale[ch], offset[ch], c.clamp)
                expected[2 * c.channels + ch] += g; magnitude[2 * c.channels + ch] += abs(g)
                expected[3 * c.channels + ch] += g * Double(finiteX[i]); magnitude[3 * c.channels + ch] += abs(g * Double(finiteX[i]))
            }
        }
        for i in 0..<expected.count {
            let error = abs(sums[i] - initialSums[i] - expected[i])
            if !(error <= 1e-5 * magnitude[i] + 1e-6) {
                XCTFail("\(context): totals[\(i)] = \(sums[i] - initialSums[i]), expected \(expected[i])")
                return
            }
        }
        XCTAssertEqual(y[x.count].isNaN, true, "\(context): apply wrote past the output")
        XCTAssertEqual(dx[x.count], 42, "\(context): input gradient written past the end")
        for p in 0..<c.planes.upperBound {
            let ch = p % c.channels
            for i in p * c.planeSize..<(p + 1) * c.planeSize {
                guard c.planes.contains(p) else {
                    if !y[i].isNaN || !(dx[i] == initialDX[i] || (dx[i].isNaN && initialDX[i].isNaN)) {
                        XCTFail("\(context): element \(i) outside the planes was written")
                        return
                    }
                    continue
                }
                if x[i].isNaN {
                    if !y[i].isNaN || !dx[i].isNaN { XCTFail("\(context): NaN input at \(i) gave y \(y[i]), dx \(dx[i])"); return }
                    continue
                }
                var u = Double(x[i] * scale[ch] + offset[ch])
                if let clamp = c.clamp { u = min(max(u, Double(clamp.lower)), Double(clamp.upper)) }
                if abs(Double(y[i]) - u) > 1e-6 * max(1, abs(u)) {
                    XCTFail("\(context): y[\(i)] = \(y[i]), expected \(u)")
                    return
                }
                let g = maskedGradient(dy[i], x[i], scale[ch], offset[ch], c.clamp)
                let terms = [g * Double(gain[ch]), Double(x[i]) * Double(slope[ch]), Double(constant[ch])]
                let start = accumulate ? Double(initialDX[i]) : 0
                let value = start + terms.reduce(0, +), scaleOfError = abs(start) + terms.map(abs).reduce(0, +)
                if !(abs(Double(dx[i]) - value) <= 1e-6 * scaleOfError + 1e-7) {
                    XCTFail("\(context): dx[\(i)] = \(dx[i]), expected \(value)")
                    return
                }
            }
        }
    }

    func testEveryPathAgainstDoubleReference() {
        var seed: UInt64 = 1
        let clamps: [BatchNormalizationKernel.Clamp?] = [nil, .init(lower: 0, upper: 6), .init(lower: 0, upper: .infinity)]
        for isa in FP32InstructionSet.supported {
            for planeSize in [1, 3, 15, 16, 17, 31, 32, 33, 64, 100, 1024] {
                for (channels, planes) in [(1, 0..<3), (5, 0..<10), (5, 3..<12), (7, 9..<10)] {
                    for clamp in clamps {
                        for accumulate in [false, true] {
                            seed += 10
                            check(Case(channels: channels, planeSize: planeSize, planes: planes, clamp: clamp),
                                  isa: isa, accumulate: accumulate, seed: seed)
                        }
                    }
                }
            }
        }
    }

    /// Every path computes the same elementwise results (no fused multiply-add anywhere), so the clamp mask of the
    /// backward agrees with the forward clamp whichever ISA runs; the sums agree to rounding.
    func testPathsAgreeElementwise() {
        let c = Case(channels: 6, planeSize: 49, planes: 2..<23, clamp: .init(lower: 0, upper: 6))
        let (x, dy, scale, offset) = inputs(c, seed: 77)
        let ones = [Float](repeating: 1, count: c.channels), zeros = [Float](repeating: 0, count: c.channels)
        var outputs: [[Float]] = []
        for isa in FP32InstructionSet.supported {
            var y = [Float](repeating: 0, count: x.count), dx = [Float](repeating: 0, count: x.count)
            BatchNormalizationKernel.apply(x, planes: c.planes, channels: c.channels, planeSize: c.planeSize, scale: scale,
                                           offset: offset, clamp: c.clamp, into: &y, instructionSet: isa)
            BatchNormalizationKernel.inputGradient(outputGradient: dy, input: x, planes: c.planes, channels: c.channels,
                                                   planeSize: c.planeSize, scale: scale, offset: offset, clamp: c.clamp,
                                                   gain: ones, slope: zeros, constant: zeros, accumulate: false,
                                                   into: &dx, instructionSet: isa)
            outputs.append(y + dx)
        }
        for (index, output) in outputs.enumerated().dropFirst() {
            XCTAssertTrue(zip(output, outputs[0]).allSatisfy { $0 == $1 || ($0.isNaN && $1.isNaN) },
                          "\(FP32InstructionSet.supported[index]) differs from \(FP32InstructionSet.supported[0])")
        }
    }
}
