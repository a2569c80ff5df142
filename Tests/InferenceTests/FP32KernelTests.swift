import Tensor
import XCTest

/// Every FP32 kernel path this CPU supports (portable, AVX2, AVX-512), forced one at a time, against naive
/// double-precision references: odd shapes, tile remainders, both transposes, accumulate, epilogues, K = 1.
final class FP32KernelTests: XCTestCase {
    /// Shapes hit: single elements, K = 1, M/N below, at and just past every ISA's tile (6/8 rows, 8/16/32
    /// columns), K over one depth block (320) and over two, M on both sides of the AVX-512 unpacked-B limits (96, and
    /// 32 with `streamB`).
    static let shapes: [(m: Int, n: Int, k: Int)] = [
        (1, 1, 1), (7, 13, 1), (6, 8, 3), (8, 32, 16), (9, 33, 17), (13, 47, 29), (16, 16, 96), (17, 65, 321),
        (5, 3, 700), (33, 100, 64), (96, 70, 16), (2, 129, 8), (100, 37, 19), (130, 64, 40), (32, 200, 24),
    ]

    func testGEMMEveryPathShapeTransposeAndAccumulate() {
        XCTAssertTrue(FP32InstructionSet.supported.contains(.portable))
        for isa in FP32InstructionSet.supported {
            for (index, shape) in Self.shapes.enumerated() {
                let (m, n, k) = shape
                let a = randomValues(m * k, seed: UInt64(10 + index)), b = randomValues(k * n, seed: UInt64(50 + index))
                let initial = randomValues(m * n, seed: UInt64(90 + index))
                let product = naiveProduct(a, b, m: m, n: n, k: k)
                for transposeA in [false, true] {
                    for transposeB in [false, true] {
                        let storedA = transposeA ? Naive.transpose(a, rows: m, columns: k) : a
                        let storedB = transposeB ? Naive.transpose(b, rows: k, columns: n) : b
                        for accumulate in [false, true] {
                            for (threads, streamB) in [(1, false), (2, false), (1, true), (2, true)] {
                                // C inside a wider buffer (ldc = n + 3): the extra columns must stay untouched.
                                let ldc = n + 3
                                var c = [Float](repeating: 7, count: m * ldc)
                                for i in 0..<m { for j in 0..<n { c[i * ldc + j] = accumulate ? initial[i * n + j] : .nan } }
                                GEMM.multiply(m: m, n: n, k: k, a: storedA, lda: transposeA ? m : k, transposeA: transposeA,
                                              b: storedB, ldb: transposeB ? k : n, transposeB: transposeB,
                                              c: &c, ldc: ldc, accumulate: accumulate, threads: threads, streamB: streamB,
                                              instructionSet: isa)
                                let context = "\(isa) m=\(m) n=\(n) k=\(k) tA=\(transposeA) tB=\(transposeB) acc=\(accumulate) threads=\(threads) streamB=\(streamB)"
                                var worst: Double = 0
                                for i in 0..<m {
                                    for j in 0..<n {
                                        let expected = product[i * n + j] + (accumulate ? Double(initial[i * n + j]) : 0)
                                        worst = max(worst, abs(Double(c[i * ldc + j]) - expected))
                                    }
                                    for j in n..<ldc where c[i * ldc + j] != 7 { XCTFail("\(context): wrote past column n"); break }
                                }
                                XCTAssertLessThan(worst, 1e-5 * Double(k) + 1e-6, context)
                            }
                        }
                    }
                }
            }
        }
    }

    func testGEMMEpilogueAddsBiasPerRowAndClamps() {
        for isa in FP32InstructionSet.supported {
            for (m, n, k) in [(9, 33, 17), (16, 16, 96), (13, 47, 400), (8, 1030, 5)] {
                let a = randomValues(m * k, seed: 1), b = randomValues(k * n, seed: 2), bias = randomValues(m, seed: 3)
                let product = naiveProduct(a, b, m: m, n: n, k: k)
                let packed = PackedMatrixA(rows: m, depth: k, values: a, instructionSet: isa)
                XCTAssertEqual(packed.instructionSet, isa)
                for threads in [1, 2] {
                    var c = [Float](repeating: .nan, count: m * n)
                    bias.withUnsafeBufferPointer { biasBuffer in
                        GEMM.multiply(packedA: packed, n: n, b: b, ldb: n, c: &c, ldc: n, threads: threads,
                                      epilogue: GEMMEpilogue(bias: biasBuffer.baseAddress!, minimum: 0, maximum: 0.5))
                    }
                    var worst: Double = 0
                    for i in 0..<m {
                        for j in 0..<n {
                            let expected = min(max(product[i * n + j] + Double(bias[i]), 0), 0.5)
                            worst = max(worst, abs(Double(c[i * n + j]) - expected))
                        }
                    }
                    XCTAssertLessThan(worst, 1e-5 * Double(k) + 1e-6, "\(isa) m=\(m) n=\(n) k=\(k) threads=\(threads)")
                }
            }
        }
    }

    func testGEMMWithZeroDepthWritesZeroOrKeepsC() {
        for isa in FP32InstructionSet.supported {
            let (m, n) = (5, 9)
            let a: [Float] = [], b: [Float] = []
            var c = [Float](repeating: .nan, count: m * n)
            GEMM.multiply(m: m, n: n, k: 0, a: a + [0], lda: 1, b: b + [0], ldb: n, c: &c, ldc: n, instructionSet: isa)
            XCTAssertEqual(c, [Float](repeating: 0, count: m * n), "\(isa)")
            var kept = [Float](repeating: 2, count: m * n)
            GEMM.multiply(m: m, n: n, k: 0, a: a + [0], lda: 1, b: b + [0], ldb: n, c: &kept, ldc: n,
                          accumulate: true, instructionSet: isa)
            XCTAssertEqual(kept, [Float](repeating: 2, count: m * n), "\(isa)")
        }
    }

    func testGEMMPropagatesNaNThroughTheClamp() {
        for isa in FP32InstructionSet.supported {
            let (m, n, k) = (8, 32, 4)
            var a = randomValues(m * k, seed: 4)
            a[0] = .nan
            let b = randomValues(k * n, seed: 5)
            let packed = PackedMatrixA(rows: m, depth: k, values: a, instructionSet: isa)
            var c = [Float](repeating: 0, count: m * n)
            GEMM.multiply(packedA: packed, n: n, b: b, ldb: n, c: &c, ldc: n, epilogue: GEMMEpilogue(minimum: 0, maximum: 6))
            XCTAssertTrue(c[0..<n].allSatisfy(\.isNaN), "\(isa): row 0 reads the NaN")
            XCTAssertTrue(c[n...].allSatisfy { $0 >= 0 && $0 <= 6 }, "\(isa)")
        }
    }

    func testDepthwise3x3EveryPathAgainstNaive() {
        // (height, width, stride, padTop, padLeft, padBottom, padRight)
        let geometries = [(1, 1, 1, 1, 1, 1, 1), (4, 4, 1, 1, 1, 1, 1), (5, 7, 1, 1, 1, 1, 1), (8, 8, 2, 1, 1, 1, 1),
                          (17, 9, 2, 1, 1, 1, 1), (32, 32, 1, 1, 1, 1, 1), (32, 32, 2, 1, 1, 1, 1), (6, 11, 1, 0, 0, 0, 0),
                          (7, 5, 2, 0, 1, 1, 0), (9, 23, 2, 0, 0, 0, 0), (3, 40, 1, 1, 0, 2, 1),
                          (2, 2, 1, 1, 1, 1, 1), (16, 16, 1, 1, 1, 1, 1), (3, 300, 1, 1, 1, 1, 1), (4, 300, 2, 1, 1, 1, 1)]
        for isa in FP32InstructionSet.supported {
            for (index, geometry) in geometries.enumerated() {
                let (height, width, stride, padTop, padLeft, padBottom, padRight) = geometry
                let outH = (height + padTop + padBottom - 3) / stride + 1, outW = (width + padLeft + padRight - 3) / stride + 1
                let input = randomValues(height * width, seed: UInt64(index)), weights = randomValues(9, seed: UInt64(40 + index))
                let bias: Float = 0.25
                for clamp in [false, true] {
                    let (minimum, maximum): (Float, Float) = clamp ? (0, 0.75) : (-.infinity, .infinity)
                    var output = [Float](repeating: .nan, count: outH * outW + 1)
                    output[outH * outW] = 42
                    let scratchCount = DepthwiseConvolution3x3.scratchCount(
                        height: height, width: width, stride: stride, padTop: padTop, padLeft: padLeft,
                        outputHeight: outH, outputWidth: outW)
                    var scratch = [Float](repeating: .nan, count: scratchCount)
                    DepthwiseConvolution3x3.plane(input: input, height: height, width: width, stride: stride,
                                                  padTop: padTop, padLeft: padLeft, outputHeight: outH, outputWidth: outW,
                                                  weights: weights, bias: bias, minimum: minimum, maximum: maximum,
                                                  output: &output, scratch: &scratch, instructionSet: isa)
                    XCTAssertEqual(output[outH * outW], 42, "\(isa) wrote past the plane")
                    var worst: Float = 0
                    for oy in 0..<outH {
                        for ox in 0..<outW {
                            var sum = Double(bias)
                            for ky in 0..<3 {
                                for kx in 0..<3 {
                                    let y = oy * stride + ky - padTop, x = ox * stride + kx - padLeft
                                    guard y >= 0, y < height, x >= 0, x < width else { continue }
                                    sum += Double(weights[ky * 3 + kx]) * Double(input[y * width + x])
                                }
                            }
                            let expected = Float(min(max(sum, Double(minimum)), Double(maximum)))
                            worst = max(worst, abs(output[oy * outW + ox] - expected))
                        }
                    }
                    XCTAssertLessThan(worst, 1e-5, "\(isa) geometry \(geometry) clamp \(clamp)")
                }
            }
        }
    }

    func testDepthwisePlaneRangeMatchesOnePlaneAtATime() {
        // Flat small planes (4×4, 8×8), row kernels (16/33 wide), stride 2, and a plane too wide for the direct kernels.
        for (height, width, stride) in [(8, 8, 1), (4, 4, 1), (2, 2, 1), (16, 16, 1), (5, 33, 1), (8, 8, 2), (9, 17, 2), (3, 300, 1)] {
            let (batch, channels) = (2, 3)
            let outH = (height + 2 - 3) / stride + 1, outW = (width + 2 - 3) / stride + 1
            let input = randomValues(batch * channels * height * width, seed: 7)
            let weights = randomValues(9 * channels, seed: 8), bias = randomValues(channels, seed: 9)
            let inPlane = height * width, outPlane = outH * outW
            for isa in FP32InstructionSet.supported {
                let scratchCount = DepthwiseConvolution3x3.scratchCount(height: height, width: width, stride: stride, padTop: 1,
                                                                        padLeft: 1, outputHeight: outH, outputWidth: outW)
                var scratch = [Float](repeating: 0, count: scratchCount)
                var together = [Float](repeating: .nan, count: batch * channels * outPlane), single = together
                // Planes 1..<5 only: the ones outside the range must stay untouched.
                DepthwiseConvolution3x3.planes(1..<5, channels: channels, input: input, height: height, width: width,
                                               stride: stride, padTop: 1, padLeft: 1, outputHeight: outH, outputWidth: outW,
                                               weights: weights, bias: bias, minimum: 0, maximum: 6,
                                               output: &together, scratch: &scratch, instructionSet: isa)
                for index in 1..<5 {
                    let channel = index % channels
                    input.withUnsafeBufferPointer { source in
                        weights.withUnsafeBufferPointer { w in
                            single.withUnsafeMutableBufferPointer { out in
                                DepthwiseConvolution3x3.plane(input: source.baseAddress! + index * inPlane, height: height,
                                                              width: width, stride: stride, padTop: 1, padLeft: 1,
                                                              outputHeight: outH, outputWidth: outW,
                                                              weights: w.baseAddress! + 9 * channel, bias: bias[channel],
                                                              minimum: 0, maximum: 6,
                                                              output: out.baseAddress! + index * outPlane, scratch: &scratch,
                                                              instructionSet: isa)
                            }
                        }
                    }
                }
                let context = "\(isa) \(height)x\(width) stride \(stride)"
                XCTAssertTrue(together[0..<outPlane].allSatisfy(\.isNaN) && together[(5 * outPlane)...].allSatisfy(\.isNaN), context)
                for i in outPlane..<(5 * outPlane) where abs(together[i] - single[i]) > 1e-5 {
                    XCTFail("\(context): element \(i) \(together[i]) vs \(single[i])")
                    break
                }
            }
        }
    }

    func testPortablePathIsAlwaysSupportedAndBestIsSupported() {
        XCTAssertTrue(FP32InstructionSet.portable.isSupported)
        XCTAssertTrue(FP32InstructionSet.best.isSupported)
        XCTAssertTrue(FP32InstructionSet.preferred.isSupported)
        for isa in FP32InstructionSet.allCases {
            XCTAssertGreaterThan(isa.gemmRowTile, 0)
            XCTAssertGreaterThan(isa.gemmColumnTile, 0)
        }
    }

    private func naiveProduct(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        for i in 0..<m {
            for p in 0..<k {
                let value = Double(a[i * k + p])
                for j in 0..<n { c[i * n + j] += value * Double(b[p * n + j]) }
            }
        }
        return c
    }
}
