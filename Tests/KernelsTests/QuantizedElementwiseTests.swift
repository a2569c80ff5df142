import Kernels
import XCTest

/// Quantized Add and global average pooling against the reference integer arithmetic (exact) and against float
/// arithmetic (within one output step), on every ISA path.
final class QuantizedElementwiseTests: XCTestCase {
    func testAddPortable() throws { try checkAdd(isa: .portable) }
    func testAddAVX2() throws { try checkAdd(isa: .avx2) }
    func testAddAVX512VNNI() throws { try checkAdd(isa: .avx512vnni) }
    func testGlobalAveragePoolPortable() throws { try checkPool(isa: .portable) }

    /// FloatQuantization.quantize against QuantizeLinear written in Swift: ties at every half, values far outside
    /// the grid, infinities, NaN, −0, and a stride.
    func testQuantizeMatchesSwiftQuantizeLinear() {
        var values: [Float] = [.nan, .infinity, -.infinity, -0.0, 0, 1e30, -1e30, 4_194_305, -4_194_305]
        for i in -2_000...2_000 { values.append(Float(i) * 0.25) }  // every half and quarter around the grid
        var random = SeededRandom(seed: 17)
        for _ in 0..<2_000 { values.append(Float(random.bytes(1)[0]) * 0.37 - 40) }
        for (scale, zeroPoint, high) in [(Float(0.5), Float(0), Float(255)), (0.25, 128, 255), (0.1, 3, 15), (2, 255, 255)] {
            let expected = values.map { x -> UInt8 in
                let q = (x / scale).rounded(.toNearestOrEven) + zeroPoint
                return UInt8(q.isNaN ? zeroPoint : min(max(q, 0), high))
            }
            var actual = [UInt8](repeating: 0xEE, count: values.count * 2)
            values.withUnsafeBufferPointer { x in
                actual.withUnsafeMutableBufferPointer { y in
                    FloatQuantization.quantize(x.baseAddress!, count: values.count, scale: scale, zeroPoint: zeroPoint,
                                               high: high, into: y.baseAddress!, stride: 2)
                }
            }
            for i in values.indices where actual[2 * i] != expected[i] || actual[2 * i + 1] != 0xEE {
                XCTFail("scale \(scale) zp \(zeroPoint): \(values[i]) → \(actual[2 * i]), expected \(expected[i])")
                return
            }
        }
    }
    /// QuantizedGlobalAveragePool.rescale (C, in double) against the same arithmetic in Swift: exact halves after the
    /// scale (rounded to even), negative values, large sums, and clamping at both ends of narrow ranges.
    func testPoolRescaleMatchesSwift() {
        var sums = Array(Int32(-3_000)...3_000) + [1 << 29, -(1 << 29), (1 << 29) + 1, 123_456_789]
        var random = SeededRandom(seed: 21)
        for _ in 0..<1_000 { sums.append(Int32(random.bytes(1)[0]) * 1_021 - 130_000) }
        let outputs = [OutputQuantization(zeroPoint: 128), OutputQuantization(zeroPoint: 3, bits: 4),
                       OutputQuantization(zeroPoint: 200).relu(), OutputQuantization(zeroPoint: 0, min: 7, max: 9)]
        for scale in [0.5, 0.25, 1.0 / 3.0, 0.012_3, 2.0, 1.0 / 1_024.0] {
            for offset: Int32 in [0, 700, -45] {
                for output in outputs {
                    let expected = sums.map { sum -> UInt8 in
                        let code = (Double(sum - offset) * scale).rounded(.toNearestOrEven) + Double(output.zeroPoint)
                        return UInt8(min(max(code, Double(output.min)), Double(output.max)))
                    }
                    var actual = [UInt8](repeating: 0xEE, count: sums.count)
                    sums.withUnsafeBufferPointer { sums in
                        actual.withUnsafeMutableBufferPointer { y in
                            QuantizedGlobalAveragePool.rescale(sums.baseAddress!, count: sums.count, offset: offset,
                                                               scale: scale, output: output, into: y.baseAddress!)
                        }
                    }
                    if let i = sums.indices.first(where: { actual[$0] != expected[$0] }) {
                        XCTFail("scale \(scale) offset \(offset) \(output): sum \(sums[i]) → \(actual[i]), expected \(expected[i])")
                        return
                    }
                }
            }
        }
    }

    func testGlobalAveragePoolAVX2() throws { try checkPool(isa: .avx2) }
    func testGlobalAveragePoolAVX512VNNI() throws { try checkPool(isa: .avx512vnni) }

    private func checkAdd(isa: KernelISA) throws {
        try requireISA(isa)
        var random = SeededRandom(seed: 9)
        for count in [1, 7, 8, 15, 16, 17, 100, 1000, 450_001] {
            for zeroPoints: (UInt8, UInt8) in [(0, 0), (128, 255), (255, 3)] {
                for bits in [2, 4, 6, 8] {
                    let aScale = Double.random(in: 0.01...0.2, using: &random)
                    let bScale = aScale * Double.random(in: 0.25...4, using: &random)
                    let outputScale = (aScale + bScale) * Double.random(in: 0.7...2, using: &random) * 256 /
                        Double(1 << bits)
                    let output = random.outputQuantization(bits: bits)
                    let add = QuantizedAdd(aScale: aScale, aZeroPoint: zeroPoints.0, bScale: bScale,
                                           bZeroPoint: zeroPoints.1, outputScale: outputScale, output: output)
                    let a = random.bytes(count), b = random.bytes(count)
                    var y = [UInt8](repeating: 0, count: count)
                    a.withUnsafeBufferPointer { a in
                        b.withUnsafeBufferPointer { b in
                            y.withUnsafeMutableBufferPointer { y in
                                add.run(a, b, count: count, output: y, isa: isa, threads: count > 400_000 ? 2 : 1)
                            }
                        }
                    }
                    var expected = [UInt8](repeating: 0, count: count)
                    var worstFloatError = 0.0
                    for i in 0..<count {
                        let shift = QuantizedAdd.inputLeftShift
                        let aShifted = (Int32(a[i]) - Int32(add.aZeroPoint)) << shift
                        let bShifted = (Int32(b[i]) - Int32(add.bZeroPoint)) << shift
                        let sum = Reference.multiply(aShifted, by: add.aMultiplier) +
                            Reference.multiply(bShifted, by: add.bMultiplier)
                        expected[i] = Reference.requantize(Int64(sum), add.outputMultiplier, output)
                        let real = aScale * (Double(a[i]) - Double(zeroPoints.0)) +
                            bScale * (Double(b[i]) - Double(zeroPoints.1))
                        let ideal = min(max((real / outputScale).rounded() + Double(output.zeroPoint),
                                            Double(output.min)), Double(output.max))
                        worstFloatError = max(worstFloatError, abs(Double(y[i]) - ideal))
                    }
                    if let problem = firstMismatch(y, expected) {
                        XCTFail("\(isa) add count \(count) zp \(zeroPoints) bits \(bits): \(problem)")
                        return
                    }
                    XCTAssertLessThanOrEqual(worstFloatError, 1, "\(isa) add vs float, count \(count)")
                }
            }
        }
    }

    /// Exact halves in the Add's output rescale: equal input scales 1 and output scale 2^k make every sum of two
    /// differences d_a + d_b come out as (d_a + d_b) / 2^k, rounded half away from zero, with ties on both signs.
    /// All 65,536 input pairs, every path.
    func testAddRoundingTiesOnEveryPath() {
        let a = (0..<65_536).map { UInt8($0 / 256) }, b = (0..<65_536).map { UInt8($0 % 256) }
        for isa in KernelISA.supported {
            for k in 1...3 {
                let add = QuantizedAdd(aScale: 1, aZeroPoint: 128, bScale: 1, bZeroPoint: 128,
                                       outputScale: Double(1 << k), output: OutputQuantization(zeroPoint: 128))
                var y = [UInt8](repeating: 0, count: a.count)
                a.withUnsafeBufferPointer { a in
                    b.withUnsafeBufferPointer { b in
                        y.withUnsafeMutableBufferPointer { y in add.run(a, b, count: a.count, output: y, isa: isa) }
                    }
                }
                let expected = (0..<a.count).map { i -> UInt8 in
                    let sum = Int(a[i]) + Int(b[i]) - 256
                    let magnitude = (abs(sum) + (1 << (k - 1))) >> k  // half away from zero
                    return UInt8(min(max(128 + (sum < 0 ? -magnitude : magnitude), 0), 255))
                }
                XCTAssertNil(firstMismatch(y, expected), "\(isa) output scale 2^\(k)")
                if k == 1 {
                    XCTAssertEqual(y[127 * 256 + 128], 127, "\(isa): (−1 + 0) / 2 = −0.5 → −1")
                    XCTAssertEqual(y[129 * 256 + 128], 129, "\(isa): (1 + 0) / 2 = 0.5 → 1")
                }
            }
        }
    }

    private func checkPool(isa: KernelISA) throws {
        try requireISA(isa)
        var random = SeededRandom(seed: 10)
        for pixels in [1, 16, 49, 64] {
            for channels in [1, 7, 8, 16, 17, 96, 1280] {
                for inputZeroPoint: UInt8 in [0, 128, 255] {
                    let bits = [2, 5, 8][channels % 3]
                    let batch = 1 + channels % 3
                    let inputScale = Double.random(in: 0.01...0.1, using: &random)
                    let outputScale = inputScale * Double.random(in: 0.3...1.5, using: &random) * 256 /
                        Double(1 << bits)
                    let output = random.outputQuantization(bits: bits)
                    let pool = QuantizedGlobalAveragePool(pixels: pixels, inputScale: inputScale,
                                                          inputZeroPoint: inputZeroPoint, outputScale: outputScale,
                                                          output: output)
                    let x = random.bytes(batch * pixels * channels)
                    var y = [UInt8](repeating: 0, count: batch * channels)
                    x.withUnsafeBufferPointer { x in
                        y.withUnsafeMutableBufferPointer { y in
                            pool.run(input: x, batch: batch, channels: channels, output: y, isa: isa)
                        }
                    }
                    var expected = [UInt8](repeating: 0, count: batch * channels)
                    for n in 0..<batch {
                        for c in 0..<channels {
                            var sum: Int64 = 0
                            for p in 0..<pixels { sum += Int64(x[(n * pixels + p) * channels + c]) - Int64(inputZeroPoint) }
                            expected[n * channels + c] = Reference.requantize(sum, pool.multiplier, output)
                            let mean = inputScale * Double(sum) / Double(pixels)
                            let ideal = min(max((mean / outputScale).rounded() + Double(output.zeroPoint),
                                                Double(output.min)), Double(output.max))
                            XCTAssertLessThanOrEqual(abs(Double(y[n * channels + c]) - ideal), 1, "\(isa) pool vs float")
                        }
                    }
                    if let problem = firstMismatch(y, expected) {
                        XCTFail("\(isa) pool pixels \(pixels) channels \(channels) zp \(inputZeroPoint): \(problem)")
                        return
                    }
                }
            }
        }
    }
}
