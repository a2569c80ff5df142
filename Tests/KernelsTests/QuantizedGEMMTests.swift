import Kernels
import XCTest

/// `QuantizedGEMM` against a naive int64 GEMM + the reference requantization, on every ISA path.
final class QuantizedGEMMTests: XCTestCase {
    /// (rows M, output channels N, depth K): nothing a multiple of the tiles, K from 1 to 1280.
    static let shapes: [(m: Int, n: Int, k: Int)] = [
        (1, 1, 1), (3, 5, 3), (7, 17, 17), (9, 33, 96), (13, 8, 1280), (33, 47, 5), (17, 100, 96),
        (8, 16, 4), (16, 32, 64), (23, 31, 2), (2, 160, 480), (41, 19, 1280), (64, 48, 16), (5, 1, 1280),
    ]

    func testPortable() throws { try checkAllCases(isa: .portable) }
    func testAVX2() throws { try checkAllCases(isa: .avx2) }
    func testAVX512VNNI() throws { try checkAllCases(isa: .avx512vnni) }

    func testThreadedRunsMatchSingleThreaded() throws {
        var random = SeededRandom(seed: 7)
        // Large enough to be split by rows, by columns (few rows), and one too small to split.
        for (m, n, k) in [(2_000, 96, 96), (16, 1280, 960), (7, 200, 300)] {
            let test = randomCase(n: n, k: k, weightBits: 8, inputZeroPoint: 128,
                                  output: OutputQuantization(zeroPoint: 0).relu(), random: &random)
            let a = random.bytes(m * k)
            let single = test.run(a, rows: m, isa: .best, threads: 1)
            let threaded = test.run(a, rows: m, isa: .best, threads: 2)
            XCTAssertNil(firstMismatch(threaded, single), "threads 2, M=\(m) N=\(n) K=\(k)")
            XCTAssertNil(firstMismatch(single, test.reference(a, rows: m)), "M=\(m) N=\(n) K=\(k)")
        }
    }

    /// Exact halves at both rounding steps: multiplier ½ (2^30·2^-31) makes SRDHM round x/2 half up, and the
    /// right shift then rounds half away from zero. One channel per accumulator −600…600 (bias, K = 1, weight 0).
    func testRoundingTiesOnEveryPath() throws {
        let accumulators = Array(Int32(-600)...600)
        for isa in KernelISA.supported {
            for shift in Int32(-4)...0 {
                let multiplier = QuantizedMultiplier(multiplier: 1 << 30, shift: shift)
                let test = Case(n: accumulators.count, k: 1, weights: [Int8](repeating: 0, count: accumulators.count),
                                bias: accumulators, multipliers: [multiplier], inputZeroPoint: 0,
                                output: OutputQuantization(zeroPoint: 128))
                let actual = test.run([7], rows: 1, isa: isa)
                XCTAssertNil(firstMismatch(actual, test.reference([7], rows: 1)), "\(isa) shift \(shift)")
                // Spot checks against hand-computed values: −3/2 → −1 (half up), then −1 / 2 → −1 (away from 0).
                if shift == -1 {
                    XCTAssertEqual(actual[600 - 3], 127, "\(isa): -3 · ½ = -1.5 → -1 (half up), then -1 / 2 = -0.5 → -1 (away from zero)")
                    XCTAssertEqual(actual[600 + 2], 129, "\(isa): 2 · ½ · ½ = 0.5 → 1 (half away from zero)")
                    XCTAssertEqual(actual[600 - 2], 127, "\(isa): -2 · ½ · ½ = -0.5 → -1 (half away from zero)")
                }
            }
        }
    }

    /// The float-output GEMM (a classifier): Float(exact int32 sum) · scale, bit for bit, on every path and shape.
    func testFloatOutputMatchesExactSumTimesScale() throws {
        var random = SeededRandom(seed: 13)
        for isa in KernelISA.supported {
            for (m, n, k) in Self.shapes {
                let test = randomCase(n: n, k: k, weightBits: 8, inputZeroPoint: UInt8(truncatingIfNeeded: 37 * n),
                                      output: OutputQuantization(zeroPoint: 0), random: &random)
                let scales = (0..<n).map { Float($0 % 7 + 1) * 0.0123 }
                let a = random.bytes(m * k)
                var actual = [Float](repeating: .nan, count: m * n)
                a.withUnsafeBufferPointer { aBuffer in
                    actual.withUnsafeMutableBufferPointer { y in
                        scales.withUnsafeBufferPointer { s in
                            test.gemm.runFloatOutput(input: aBuffer.baseAddress!, rows: m, scales: s.baseAddress!,
                                                     output: y.baseAddress!, isa: isa)
                        }
                    }
                }
                for i in 0..<m {
                    for j in 0..<n {
                        var acc = Int64(test.bias[j])
                        for d in 0..<k {
                            acc += (Int64(a[i * k + d]) - Int64(test.gemm.inputZeroPoint)) * Int64(test.weights[j * k + d])
                        }
                        let expected = Float(Int32(acc)) * scales[j]
                        guard actual[i * n + j].bitPattern == expected.bitPattern else {
                            XCTFail("\(isa) M=\(m) N=\(n) K=\(k) [\(i)][\(j)]: \(actual[i * n + j]) != \(expected)")
                            return
                        }
                    }
                }
            }
        }
    }

    /// Outputs clamped at or above their zero point (ReLU, ReLU6, a Clip above zero, a plain zero point 0) take the
    /// VNNI epilogue's shorter requantization, which zeroes negative accumulators instead of correcting them; rows
    /// of 16 and 32 channels right after each other are stored whole (four and two rows per 64-byte store), other
    /// two-panel tiles one 32-byte row at a time. Against the reference on every path, with tails of rows and
    /// columns, and on two threads.
    func testClampsAtOrAboveTheZeroPointAndWholeRowStores() throws {
        var random = SeededRandom(seed: 23)
        let outputs = [OutputQuantization(zeroPoint: 0), OutputQuantization(zeroPoint: 0).relu(),
                       OutputQuantization(zeroPoint: 131).relu(), OutputQuantization(zeroPoint: 255).relu(),
                       OutputQuantization(zeroPoint: 0, min: 0, max: 97), OutputQuantization(zeroPoint: 10, min: 40, max: 200),
                       OutputQuantization(zeroPoint: 5, bits: 4).relu(), OutputQuantization(zeroPoint: 131)]
        let shapes: [(m: Int, n: Int, k: Int)] = [
            (8, 16, 16), (13, 16, 48), (5, 16, 3), (16, 32, 8), (11, 32, 40), (3, 32, 16), (21, 20, 16), (9, 48, 8),
            (19, 96, 16), (7, 8, 16), (10, 33, 5),
        ]
        for isa in KernelISA.supported {
            for (m, n, k) in shapes {
                for output in outputs {
                    let test = randomCase(n: n, k: k, weightBits: 8, inputZeroPoint: 128, output: output, random: &random)
                    let a = random.bytes(m * k)
                    if let problem = firstMismatch(test.run(a, rows: m, isa: isa), test.reference(a, rows: m)) {
                        XCTFail("\(isa) M=\(m) N=\(n) K=\(k) \(output): \(problem)")
                        return
                    }
                }
            }
        }
        for (m, n, k) in [(6_001, 32, 96), (12_003, 16, 96)] {
            let test = randomCase(n: n, k: k, weightBits: 8, inputZeroPoint: 128,
                                  output: OutputQuantization(zeroPoint: 0).relu(), random: &random)
            let a = random.bytes(m * k)
            XCTAssertNil(firstMismatch(test.run(a, rows: m, isa: .best, threads: 2), test.reference(a, rows: m)),
                         "threads 2, M=\(m) N=\(n) K=\(k)")
        }
    }

    /// The VNNI epilogue adds the output zero point in its rounding constants when every channel of the layer allows
    /// it (no left shift, zp·2^r + 2^(r−1) < 2^30), and in the packs otherwise: layers that fold, layers with one
    /// channel that does not (a multiplier ≥ 1, or a right shift of 25 with a zero point ≥ 32), against the
    /// reference on every path, and on two threads that split the panels (each call starts at its own panel).
    func testZeroPointFoldedIntoTheRoundingOrNot() throws {
        var random = SeededRandom(seed: 31)
        let unfoldable = [QuantizedMultiplier(2.5), QuantizedMultiplier(multiplier: 1 << 30, shift: -25)]
        for isa in KernelISA.supported {
            for (m, n, k) in [(13, 40, 24), (8, 16, 16), (9, 32, 5), (21, 96, 16)] {
                for zeroPoint: Int32 in [0, 31, 131, 255] {
                    for spoiler in [nil] + unfoldable {
                        var multipliers = (0..<n).map { _ in QuantizedMultiplier(Double.random(in: 0.0005...0.01, using: &random)) }
                        if let spoiler { multipliers[n - 1 - Int(zeroPoint) % n] = spoiler }
                        for output in [OutputQuantization(zeroPoint: zeroPoint), OutputQuantization(zeroPoint: zeroPoint).relu()] {
                            let test = Case(n: n, k: k, weights: random.weights(n * k, bits: 8), bias: random.bias(n),
                                            multipliers: multipliers, inputZeroPoint: 128, output: output)
                            let a = random.bytes(m * k)
                            if let problem = firstMismatch(test.run(a, rows: m, isa: isa), test.reference(a, rows: m)) {
                                XCTFail("\(isa) M=\(m) N=\(n) K=\(k) \(output) spoiler \(String(describing: spoiler)): \(problem)")
                                return
                            }
                        }
                    }
                }
            }
        }
        for spoiler in [nil] + unfoldable {
            let (m, n, k) = (16, 1280, 960)
            var multipliers = (0..<n).map { _ in QuantizedMultiplier(Double.random(in: 0.000_02...0.000_1, using: &random)) }
            if let spoiler { multipliers[n - 3] = spoiler }
            let test = Case(n: n, k: k, weights: random.weights(n * k, bits: 8), bias: random.bias(n), multipliers: multipliers,
                            inputZeroPoint: 128, output: OutputQuantization(zeroPoint: 131))
            let a = random.bytes(m * k)
            XCTAssertNil(firstMismatch(test.run(a, rows: m, isa: .best, threads: 2), test.reference(a, rows: m)),
                         "threads 2, spoiler \(String(describing: spoiler))")
        }
    }

    /// Row strides larger than the rows: bytes between rows are neither read into the result nor written.
    func testRowStrides() throws {
        var random = SeededRandom(seed: 11)
        for isa in KernelISA.supported {
            let (m, n, k, lda, ldc) = (11, 21, 19, 27, 30)
            let test = randomCase(n: n, k: k, weightBits: 8, inputZeroPoint: 3,
                                  output: OutputQuantization(zeroPoint: 9), random: &random)
            let packedA = random.bytes(m * lda)
            var dense = [UInt8](repeating: 0, count: m * k)
            for i in 0..<m { for j in 0..<k { dense[i * k + j] = packedA[i * lda + j] } }
            var c = [UInt8](repeating: 0xEE, count: m * ldc)
            packedA.withUnsafeBufferPointer { aBuffer in
                c.withUnsafeMutableBufferPointer { cBuffer in
                    test.gemm.run(input: aBuffer, rows: m, inputRowStride: lda, output: cBuffer, outputRowStride: ldc,
                             isa: isa)
                }
            }
            let expected = test.reference(dense, rows: m)
            for i in 0..<m {
                XCTAssertEqual(Array(c[(i * ldc)..<(i * ldc + n)]), Array(expected[(i * n)..<(i * n + n)]),
                               "\(isa) row \(i)")
                XCTAssertTrue(c[(i * ldc + n)..<(i * ldc + ldc)].allSatisfy { $0 == 0xEE }, "\(isa) row \(i) gap")
            }
        }
    }

    private func checkAllCases(isa: KernelISA) throws {
        try requireISA(isa)
        var random = SeededRandom(seed: 1)
        var cases = 0
        for (m, n, k) in Self.shapes {
            for inputZeroPoint: UInt8 in [0, 128, 255] {
                for bits in 2...8 {
                    // Weight and activation widths vary independently; the activation range sets the clamp.
                    let weightBits = (bits + inputZeroPoint.trailingZeroBitCount) % 7 + 2
                    let output = random.outputQuantization(bits: bits)
                    let test = randomCase(n: n, k: k, weightBits: weightBits, inputZeroPoint: inputZeroPoint,
                                          output: output, random: &random)
                    let a = random.bytes(m * k, in: 0...UInt8((1 << bits) - 1))
                    let actual = test.run(a, rows: m, isa: isa)
                    let expected = test.reference(a, rows: m)
                    if let problem = firstMismatch(actual, expected) {
                        XCTFail("\(isa) M=\(m) N=\(n) K=\(k) zp=\(inputZeroPoint) bits=\(bits) w\(weightBits): \(problem)")
                        return
                    }
                    cases += 1
                }
            }
        }
        // Weights all at the narrow-range extremes with the activations at their extremes: the largest
        // accumulators the scheme allows.
        for bits in 2...8 {
            let limit = Int8((1 << (bits - 1)) - 1)
            for (m, n, k) in [(9, 17, 1280), (3, 33, 96)] {
                for sign: Int8 in [1, -1] {
                    let weights = [Int8](repeating: sign * limit, count: n * k)
                    // Scale so the largest |accumulator| maps to about 128 codes around the zero point 128.
                    let multiplier = QuantizedMultiplier(128.0 / Double(k * 255 * Int(limit)))
                    let test = Case(n: n, k: k, weights: weights, bias: [Int32](repeating: 0, count: n),
                                    multipliers: [multiplier], inputZeroPoint: 0,
                                    output: OutputQuantization(zeroPoint: 128))
                    let a = (0..<(m * k)).map { UInt8(($0 % 2) * 255) }
                    XCTAssertNil(firstMismatch(test.run(a, rows: m, isa: isa), test.reference(a, rows: m)),
                                 "\(isa) extremes bits=\(bits) K=\(k) sign=\(sign)")
                }
            }
        }
        XCTAssertEqual(cases, Self.shapes.count * 3 * 7)
    }

    // MARK: - helpers

    /// A GEMM together with the unpacked values it was built from, for the reference.
    private struct Case {
        let gemm: QuantizedGEMM
        let weights: [Int8]
        let bias: [Int32]
        let multipliers: [QuantizedMultiplier]

        init(n: Int, k: Int, weights: [Int8], bias: [Int32], multipliers: [QuantizedMultiplier],
             inputZeroPoint: UInt8, output: OutputQuantization) {
            self.weights = weights
            self.bias = bias
            self.multipliers = multipliers.count == 1 ? Array(repeating: multipliers[0], count: n) : multipliers
            gemm = QuantizedGEMM(outputChannels: n, depth: k, weights: weights, bias: bias,
                                 multipliers: multipliers, inputZeroPoint: inputZeroPoint, output: output)
        }

        /// Naive GEMM in int64: Σ (a − z_a)·w + bias, then the reference requantization.
        func reference(_ a: [UInt8], rows: Int) -> [UInt8] {
            let n = gemm.outputChannels, k = gemm.depth
            var c = [UInt8](repeating: 0, count: rows * n)
            for i in 0..<rows {
                for j in 0..<n {
                    var acc = Int64(bias[j])
                    for d in 0..<k {
                        acc += (Int64(a[i * k + d]) - Int64(gemm.inputZeroPoint)) * Int64(weights[j * k + d])
                    }
                    c[i * n + j] = Reference.requantize(acc, multipliers[j], gemm.output)
                }
            }
            return c
        }

        func run(_ a: [UInt8], rows: Int, isa: KernelISA, threads: Int = 1) -> [UInt8] {
            var c = [UInt8](repeating: 0, count: rows * gemm.outputChannels)
            a.withUnsafeBufferPointer { aBuffer in
                c.withUnsafeMutableBufferPointer { cBuffer in
                    gemm.run(input: aBuffer, rows: rows, output: cBuffer, isa: isa, threads: threads)
                }
            }
            return c
        }
    }

    private func randomCase(n: Int, k: Int, weightBits: Int, inputZeroPoint: UInt8, output: OutputQuantization,
                            random: inout SeededRandom) -> Case {
        Case(n: n, k: k, weights: random.weights(n * k, bits: weightBits), bias: random.bias(n),
             multipliers: random.multipliers(n, depth: k, weightBits: weightBits), inputZeroPoint: inputZeroPoint,
             output: output)
    }
}
