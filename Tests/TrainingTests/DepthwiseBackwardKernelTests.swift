import Tensor
import XCTest

/// `DepthwiseConvolution3x3.backward` (the C kernels behind the training depthwise backward) against a
/// double-precision reference, on every instruction set this CPU runs: odd widths (vector tails, 1-wide planes,
/// the flat 4- and 8-wide AVX-512 kernels, small stride-2 planes in one vector window or not, rows wider than the
/// mask tables), strides 1 and 2, symmetric and asymmetric padding, several images and channels split over workers,
/// stored and accumulated input gradients.
final class DepthwiseBackwardKernelTests: XCTestCase {
    struct Case: CustomStringConvertible {
        var batch: Int, channels: Int, height: Int, width: Int, stride: Int
        var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
        var outH: Int { (height + padTop + padBottom - 3) / stride + 1 }
        var outW: Int { (width + padLeft + padRight - 3) / stride + 1 }
        var description: String {
            "\(batch)×\(channels)×\(height)×\(width) stride \(stride) pads \(padTop),\(padLeft),\(padBottom),\(padRight)"
        }
    }

    /// dW (channels × 9) and dX in Double, with the sum of the absolute terms of each element (the scale its
    /// float rounding error is measured against).
    func reference(_ c: Case, input: [Float], outputGradient dy: [Float], weights: [Float])
        -> (dW: [Double], dWScale: [Double], dX: [Double], dXScale: [Double]) {
        var dW = [Double](repeating: 0, count: c.channels * 9), dWScale = dW
        var dX = [Double](repeating: 0, count: input.count), dXScale = dX
        for n in 0..<c.batch {
            for channel in 0..<c.channels {
                let plane = n * c.channels + channel
                for oy in 0..<c.outH {
                    for ox in 0..<c.outW {
                        let d = Double(dy[(plane * c.outH + oy) * c.outW + ox])
                        for ky in 0..<3 {
                            for kx in 0..<3 {
                                let y = oy * c.stride + ky - c.padTop, x = ox * c.stride + kx - c.padLeft
                                guard y >= 0, y < c.height, x >= 0, x < c.width else { continue }
                                let i = (plane * c.height + y) * c.width + x, tap = channel * 9 + ky * 3 + kx
                                dW[tap] += d * Double(input[i])
                                dWScale[tap] += abs(d * Double(input[i]))
                                dX[i] += d * Double(weights[tap])
                                dXScale[i] += abs(d * Double(weights[tap]))
                            }
                        }
                    }
                }
            }
        }
        return (dW, dWScale, dX, dXScale)
    }

    /// Runs the kernel and checks both gradients; `accumulate` starts both from random values instead of dW = 0 and
    /// an input gradient of NaN (which a stored gradient must overwrite everywhere).
    func check(_ c: Case, isa: FP32InstructionSet, threads: Int, accumulate: Bool, weight: Bool = true,
               input wantInput: Bool = true, seed: UInt64) {
        let inputCount = c.batch * c.channels * c.height * c.width
        let input = randomValues(inputCount, seed: seed)
        let dy = randomValues(c.batch * c.channels * c.outH * c.outW, seed: seed + 1)
        let weights = randomValues(c.channels * 9, seed: seed + 2)
        let initialW = accumulate ? randomValues(c.channels * 9, seed: seed + 3) : [Float](repeating: 0, count: c.channels * 9)
        let initialX = accumulate ? randomValues(inputCount, seed: seed + 4) : [Float](repeating: .nan, count: inputCount)
        // One guard element past the input gradient, which must stay untouched.
        var dX = initialX + [42], dW = initialW
        dX.withUnsafeMutableBufferPointer { dXBuffer in
            dW.withUnsafeMutableBufferPointer { dWBuffer in
                DepthwiseConvolution3x3.backward(
                    batch: c.batch, channels: c.channels, input: input, outputGradient: dy, weights: weights,
                    height: c.height, width: c.width, stride: c.stride, padTop: c.padTop, padLeft: c.padLeft,
                    outputHeight: c.outH, outputWidth: c.outW, weightGradient: weight ? dWBuffer.baseAddress! : nil,
                    inputGradient: wantInput ? dXBuffer.baseAddress! : nil, accumulate: accumulate, threads: threads,
                    instructionSet: isa)
            }
        }
        let context = "\(isa) \(c) threads \(threads) accumulate \(accumulate)"
        let expected = reference(c, input: input, outputGradient: dy, weights: weights)
        XCTAssertEqual(dX[inputCount], 42, "\(context): wrote past the input gradient")
        // Float sums of these few terms are off by a few ulps of the absolute sum; a wrong or missing tap is off
        // by the size of a term (0.1 … 1 of the scale).
        let tolerance = 1e-5
        if weight {
            for i in 0..<dW.count {
                let error = abs(Double(dW[i]) - Double(initialW[i]) - expected.dW[i])
                if !(error <= tolerance * (expected.dWScale[i] + abs(Double(initialW[i])))) {
                    XCTFail("\(context): dW[\(i)] = \(dW[i] - initialW[i]), expected \(expected.dW[i])")
                    return
                }
            }
        } else {
            XCTAssertEqual(dW, initialW, "\(context): weight gradient written though not asked for")
        }
        for i in 0..<inputCount {
            if !wantInput {
                if !(dX[i].isNaN && initialX[i].isNaN) && dX[i] != initialX[i] {
                    XCTFail("\(context): input gradient written though not asked for")
                    return
                }
                continue
            }
            let start = accumulate ? Double(initialX[i]) : 0
            let error = abs(Double(dX[i]) - start - expected.dX[i])
            if !(error <= tolerance * (expected.dXScale[i] + abs(start))) {
                XCTFail("\(context): dX[\(i)] = \(dX[i]), expected \(start + expected.dX[i])")
                return
            }
        }
    }

    func testEveryPathAgainstDoubleReference() {
        // (top, left, bottom, right)
        let paddings = [(1, 1, 1, 1), (0, 0, 0, 0), (0, 1, 1, 0), (1, 0, 0, 1), (2, 2, 2, 2)]
        var seed: UInt64 = 1
        for isa in FP32InstructionSet.supported {
            for width in [1, 2, 4, 5, 8, 17, 33] {
                for height in 1...7 {
                    for stride in [1, 2] {
                        for (padTop, padLeft, padBottom, padRight) in paddings {
                            let c = Case(batch: 3, channels: 5, height: height, width: width, stride: stride,
                                         padTop: padTop, padLeft: padLeft, padBottom: padBottom, padRight: padRight)
                            guard c.outH >= 1, c.outW >= 1 else { continue }
                            seed += 10
                            check(c, isa: isa, threads: 1 + Int(seed / 10 % 2), accumulate: seed / 20 % 2 == 1, seed: seed)
                        }
                    }
                }
            }
        }
    }

    /// Shapes for the described (not stored) operands: chunks that start mid-image (32×32), several workers, both
    /// strides, the flat 8×8 and 4×4 kernels, an odd plane with asymmetric padding.
    static let describedOperandCases = [
        Case(batch: 3, channels: 5, height: 32, width: 32, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
        Case(batch: 3, channels: 5, height: 32, width: 32, stride: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
        Case(batch: 4, channels: 7, height: 8, width: 8, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
        Case(batch: 4, channels: 7, height: 4, width: 4, stride: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
        Case(batch: 2, channels: 3, height: 5, width: 9, stride: 1, padTop: 0, padLeft: 1, padBottom: 1, padRight: 0),
    ]

    /// An affine input (a BatchNorm + clamp output that was not stored) gives exactly the gradients of the
    /// computed input, on every path: chunks of planes that start mid-image, several workers, both strides; and
    /// the BatchNorm backward sums the kernel takes on the way are exactly those of the BatchNorm kernel.
    func testAffineInputMatchesComputedInput() {
        var seed: UInt64 = 500
        for isa in FP32InstructionSet.supported {
            for c in Self.describedOperandCases {
                for clamp in [nil, BatchNormalizationKernel.Clamp(lower: 0, upper: 6)] {
                    seed += 10
                    let inputCount = c.batch * c.channels * c.height * c.width
                    let raw = randomValues(inputCount, seed: seed, range: -4...4)
                    let scale = randomValues(c.channels, seed: seed + 1, range: 0.5...2)
                    let offset = randomValues(c.channels, seed: seed + 2)
                    let dy = randomValues(c.batch * c.channels * c.outH * c.outW, seed: seed + 3)
                    let weights = randomValues(c.channels * 9, seed: seed + 4)
                    var computed = [Float](repeating: 0, count: inputCount)
                    computed.withUnsafeMutableBufferPointer { target in
                        BatchNormalizationKernel.apply(raw, planes: 0..<(c.batch * c.channels), channels: c.channels,
                                                       planeSize: c.height * c.width, scale: scale, offset: offset,
                                                       clamp: clamp, into: target.baseAddress!)
                    }
                    var results: [[Float]] = []
                    let workers = min(2, c.batch)
                    var sums = [Double](repeating: 0, count: workers * 2 * c.channels)
                    for affine in [false, true] {
                        var dW = [Float](repeating: 0, count: c.channels * 9), dX = [Float](repeating: 0, count: inputCount)
                        scale.withUnsafeBufferPointer { scaleBuffer in
                            offset.withUnsafeBufferPointer { offsetBuffer in
                                dW.withUnsafeMutableBufferPointer { dWBuffer in
                                    dX.withUnsafeMutableBufferPointer { dXBuffer in
                                        sums.withUnsafeMutableBufferPointer { sumBuffer in
                                            DepthwiseConvolution3x3.backward(
                                                batch: c.batch, channels: c.channels, input: affine ? raw : computed,
                                                inputAffine: affine ? (scale: scaleBuffer.baseAddress!, offset: offsetBuffer.baseAddress!,
                                                                       clamp: clamp, gradientSums: sumBuffer.baseAddress!) : nil,
                                                outputGradient: dy, weights: weights, height: c.height, width: c.width,
                                                stride: c.stride, padTop: c.padTop, padLeft: c.padLeft, outputHeight: c.outH,
                                                outputWidth: c.outW, weightGradient: dWBuffer.baseAddress!,
                                                inputGradient: dXBuffer.baseAddress!, accumulate: false, threads: 2, instructionSet: isa)
                                        }
                                    }
                                }
                            }
                        }
                        results.append(dW + dX)
                    }
                    // The sums the kernel took: BatchNorm's backward sums over the input gradient, worker by worker.
                    var expected = [Double](repeating: 0, count: workers * 2 * c.channels)
                    expected.withUnsafeMutableBufferPointer { target in
                        let dX = Array(results[0][(c.channels * 9)...])
                        for worker in 0..<workers {
                            let images = Parallel.chunk(worker, of: workers, count: c.batch)
                            let base = target.baseAddress! + worker * 2 * c.channels
                            BatchNormalizationKernel.gradientSums(
                                outputGradient: dX, input: raw, planes: images.lowerBound * c.channels..<images.upperBound * c.channels,
                                channels: c.channels, planeSize: c.height * c.width, scale: scale, offset: offset, clamp: clamp,
                                sum: base, dot: base + c.channels)
                        }
                    }
                    XCTAssertEqual(sums, expected, "\(isa) \(c) clamp \(clamp != nil): BatchNorm sums")
                    XCTAssertEqual(results[0], results[1], "\(isa) \(c) clamp \(clamp != nil)")
                }
            }
        }
    }

    /// An output gradient given as BatchNorm's input gradient (`outputGradientAffine`, never stored) gives exactly
    /// the gradients of the computed one, on every path.
    func testAffineOutputGradientMatchesComputedOne() {
        var seed: UInt64 = 900
        for isa in FP32InstructionSet.supported {
            for c in Self.describedOperandCases {
                for clamp in [nil, BatchNormalizationKernel.Clamp(lower: 0, upper: 6)] {
                    seed += 10
                    let inputCount = c.batch * c.channels * c.height * c.width
                    let outputCount = c.batch * c.channels * c.outH * c.outW
                    let input = randomValues(inputCount, seed: seed)
                    let weights = randomValues(c.channels * 9, seed: seed + 1)
                    // BatchNorm's side: its output gradient d, its input x (this convolution's output), per-channel values.
                    let d = randomValues(outputCount, seed: seed + 2)
                    let x = randomValues(outputCount, seed: seed + 3, range: -4...4)
                    let values = randomValues(5 * c.channels, seed: seed + 4)  // scale, offset, gain, slope, constant
                    var computed = [Float](repeating: 0, count: outputCount)
                    values.withUnsafeBufferPointer { v in
                        let channels = c.channels, base = v.baseAddress!
                        computed.withUnsafeMutableBufferPointer { target in
                            BatchNormalizationKernel.inputGradient(
                                outputGradient: d, input: x, planes: 0..<(c.batch * channels), channels: channels,
                                planeSize: c.outH * c.outW, scale: base, offset: base + channels, clamp: clamp,
                                gain: base + 2 * channels, slope: base + 3 * channels, constant: base + 4 * channels,
                                accumulate: false, into: target.baseAddress!)
                        }
                    }
                    var results: [[Float]] = []
                    for described in [false, true] {
                        var dW = [Float](repeating: 0, count: c.channels * 9), dX = [Float](repeating: 0, count: inputCount)
                        values.withUnsafeBufferPointer { v in
                            x.withUnsafeBufferPointer { xBuffer in
                                let channels = c.channels, base = v.baseAddress!
                                let affine = OutputGradientAffine(input: xBuffer.baseAddress!, scale: base, offset: base + channels,
                                                                  clamp: clamp, gain: base + 2 * channels,
                                                                  slope: base + 3 * channels, constant: base + 4 * channels)
                                dW.withUnsafeMutableBufferPointer { dWBuffer in
                                    dX.withUnsafeMutableBufferPointer { dXBuffer in
                                        DepthwiseConvolution3x3.backward(
                                            batch: c.batch, channels: c.channels, input: input,
                                            outputGradient: described ? d : computed, outputGradientAffine: described ? affine : nil,
                                            weights: weights, height: c.height, width: c.width, stride: c.stride,
                                            padTop: c.padTop, padLeft: c.padLeft, outputHeight: c.outH, outputWidth: c.outW,
                                            weightGradient: dWBuffer.baseAddress!, inputGradient: dXBuffer.baseAddress!,
                                            accumulate: false, threads: 2, instructionSet: isa)
                                    }
                                }
                            }
                        }
                        results.append(dW + dX)
                    }
                    XCTAssertEqual(results[0], results[1], "\(isa) \(c) clamp \(clamp != nil)")
                }
            }
        }
    }

    func testLargePlanesOnlyOneGradientAndManyChunks() {
        let cases = [
            // MobileNet-like planes; 32×32 stride 2 spans several chunks per worker.
            Case(batch: 4, channels: 6, height: 32, width: 32, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 4, channels: 6, height: 32, width: 32, stride: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 5, channels: 7, height: 8, width: 8, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 5, channels: 7, height: 4, width: 4, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 5, channels: 7, height: 8, width: 8, stride: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 3, channels: 5, height: 16, width: 16, stride: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 3, channels: 2, height: 16, width: 8, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            // Wider than the AVX-512 mask tables (256 outputs, 512 input columns): the portable fallbacks.
            Case(batch: 2, channels: 2, height: 3, width: 300, stride: 1, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
            Case(batch: 2, channels: 2, height: 5, width: 600, stride: 2, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
        ]
        var seed: UInt64 = 500
        for isa in FP32InstructionSet.supported {
            for c in cases {
                for accumulate in [false, true] {
                    seed += 10
                    check(c, isa: isa, threads: 2, accumulate: accumulate, seed: seed)
                }
                check(c, isa: isa, threads: 2, accumulate: false, weight: false, seed: seed + 5)
                check(c, isa: isa, threads: 2, accumulate: true, input: false, seed: seed + 6)
            }
        }
    }
}
