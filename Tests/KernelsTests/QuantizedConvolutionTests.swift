import Kernels
import XCTest

/// Depthwise 3×3 and general (im2col) convolutions against naive NHWC loops in int64, on every ISA path.
final class QuantizedConvolutionTests: XCTestCase {
    func testDepthwisePortable() throws { try checkDepthwise(isa: .portable) }
    func testDepthwiseAVX2() throws { try checkDepthwise(isa: .avx2) }
    func testDepthwiseAVX512VNNI() throws { try checkDepthwise(isa: .avx512vnni) }
    func testConvolutionPortable() throws { try checkConvolution(isa: .portable) }
    func testConvolutionAVX2() throws { try checkConvolution(isa: .avx2) }
    func testConvolutionAVX512VNNI() throws { try checkConvolution(isa: .avx512vnni) }

    func testDepthwiseThreadsAndOutputSize() throws {
        var random = SeededRandom(seed: 5)
        let conv = DepthwiseCase(channels: 96, stride: 2, weightBits: 8, inputZeroPoint: 128,
                                 output: OutputQuantization(zeroPoint: 0).relu(), random: &random)
        XCTAssertTrue(conv.op.outputSize(height: 32, width: 31) == (16, 16))
        XCTAssertTrue(conv.op.outputSize(height: 1, width: 2) == (1, 1))
        let input = random.bytes(16 * 32 * 31 * 96)  // enough work to be split over two threads
        let single = conv.run(input, batch: 16, height: 32, width: 31, isa: .best, threads: 1)
        XCTAssertNil(firstMismatch(conv.run(input, batch: 16, height: 32, width: 31, isa: .best, threads: 2), single))
        XCTAssertNil(firstMismatch(single, conv.reference(input, batch: 16, height: 32, width: 31)))
        // Stride 1 with an odd height: the threads' row ranges start and end inside images, where rows pair up
        // differently for the 2×2 blocks.
        let conv1 = DepthwiseCase(channels: 96, stride: 1, weightBits: 8, inputZeroPoint: 3,
                                  output: OutputQuantization(zeroPoint: 0).relu(), random: &random)
        let input1 = random.bytes(11 * 15 * 16 * 96)  // 165 rows: on two threads 82 + 83, split inside image 5
        let single1 = conv1.run(input1, batch: 11, height: 15, width: 16, isa: .best, threads: 1)
        XCTAssertNil(firstMismatch(conv1.run(input1, batch: 11, height: 15, width: 16, isa: .best, threads: 2), single1))
        XCTAssertNil(firstMismatch(single1, conv1.reference(input1, batch: 11, height: 15, width: 16)))
    }

    /// Outputs clamped at or above their zero point take the VNNI kernel's shorter requantization (negative
    /// accumulators zeroed instead of corrected), except with four pixels per register; a Clip above the zero point
    /// and narrow ranges, layers with a channel whose multiplier is ≥ 1 (a left shift) or tiny (a right shift of 25),
    /// for last blocks of 1, 2 and 4 pixels per register, both strides, on every path.
    func testDepthwiseClampsAtOrAboveTheZeroPoint() throws {
        var random = SeededRandom(seed: 29)
        let outputs = [OutputQuantization(zeroPoint: 0), OutputQuantization(zeroPoint: 131).relu(),
                       OutputQuantization(zeroPoint: 10, min: 40, max: 200), OutputQuantization(zeroPoint: 255).relu(),
                       OutputQuantization(zeroPoint: 5, bits: 4).relu(), OutputQuantization(zeroPoint: 0, min: 0, max: 97)]
        for isa in KernelISA.supported {
            for (height, width, channels) in [(5, 9, 16), (4, 7, 32), (6, 6, 40), (3, 11, 96), (5, 5, 130)] {
                for stride in [1, 2] {
                    for output in outputs {
                        for spoiler in [nil, QuantizedMultiplier(2.5), QuantizedMultiplier(multiplier: 1 << 30, shift: -25)] {
                            var multipliers = (0..<channels).map { _ in
                                QuantizedMultiplier(Double.random(in: 0.001...0.02, using: &random))
                            }
                            if let spoiler { multipliers[channels / 2] = spoiler }
                            let conv = DepthwiseCase(channels: channels, stride: stride,
                                                     weights: random.weights(channels * 9, bits: 8), bias: random.bias(channels),
                                                     multipliers: multipliers, inputZeroPoint: 77, output: output)
                            let input = random.bytes(2 * height * width * channels)
                            let actual = conv.run(input, batch: 2, height: height, width: width, isa: isa)
                            if let problem = firstMismatch(actual, conv.reference(input, batch: 2, height: height, width: width)) {
                                XCTFail("\(isa) dw \(height)×\(width)×\(channels) s\(stride) \(output) spoiler \(String(describing: spoiler)): \(problem)")
                                return
                            }
                        }
                    }
                }
            }
            // An accumulator near 2^30 with a right shift of 23 and a zero point of 200: its output saturates at qmax.
            var bias = random.bias(40)
            bias[7] = 1_000_000_000
            var multipliers = (0..<40).map { _ in QuantizedMultiplier(Double.random(in: 0.001...0.02, using: &random)) }
            multipliers[7] = QuantizedMultiplier(multiplier: 1 << 30, shift: -23)
            let conv = DepthwiseCase(channels: 40, stride: 1, weights: random.weights(40 * 9, bits: 8), bias: bias,
                                     multipliers: multipliers, inputZeroPoint: 77, output: OutputQuantization(zeroPoint: 200).relu())
            let input = random.bytes(4 * 5 * 40)
            XCTAssertNil(firstMismatch(conv.run(input, batch: 1, height: 4, width: 5, isa: isa),
                                       conv.reference(input, batch: 1, height: 4, width: 5)), "\(isa) overflowing zero point")
        }
    }

    /// Exact halves at both rounding steps through the depthwise epilogue, as QuantizedGEMMTests'
    /// testRoundingTiesOnEveryPath does for the GEMM: zero weights, so each channel's accumulator is its bias
    /// (−600…600), multiplier ½ with right shifts 0…4 (SRDHM rounds x/2 half up, the shift rounds half away from
    /// zero), and multipliers ≥ 1 (a left shift). The channel counts end in a last block of 49, 32 and 16 channels
    /// (1, 2 and 4 pixels per register); a 3×7 image takes a run of four pixels, a pair and a single pixel per row,
    /// and a 5×9 image also has 2×2 blocks of stride 1 whose windows lie inside the image (addressed differently).
    func testDepthwiseRoundingTiesOnEveryPath() throws {
        let accumulators = Array(Int32(-600)...600)
        var random = SeededRandom(seed: 6)
        for isa in KernelISA.supported {
            for channels in [1201, 1184, 1168] {
                for shift in Int32(-4)...2 {
                    for (height, width) in [(3, 7), (5, 9)] {
                        let multiplier = QuantizedMultiplier(multiplier: 1 << 30, shift: shift)
                        let conv = DepthwiseCase(channels: channels, stride: 1, weights: [Int8](repeating: 0, count: channels * 9),
                                                 bias: Array(accumulators.prefix(channels)), multipliers: [multiplier],
                                                 inputZeroPoint: 17, output: OutputQuantization(zeroPoint: 128))
                        let input = random.bytes(height * width * channels)
                        let actual = conv.run(input, batch: 1, height: height, width: width, isa: isa)
                        if let problem = firstMismatch(actual, conv.reference(input, batch: 1, height: height, width: width)) {
                            XCTFail("\(isa) \(channels) channels, \(height)×\(width), shift \(shift): \(problem)")
                        }
                        if shift == -1 {
                            // −3 · ½ = −1.5 → −1 (half up), then −1 / 2 = −0.5 → −1 (away from zero); ±2 · ¼ = ±0.5 → ±1.
                            XCTAssertEqual(actual[600 - 3], 127, "\(isa)")
                            XCTAssertEqual(actual[600 + 2], 129, "\(isa)")
                            XCTAssertEqual(actual[600 - 2], 127, "\(isa)")
                        }
                    }
                }
            }
        }
    }

    private func checkDepthwise(isa: KernelISA) throws {
        try requireISA(isa)
        var random = SeededRandom(seed: 3)
        // Channel counts around the 16-lane groups and the 8-lane AVX2 halves; images down to 1×1. The VNNI kernel
        // packs a last block of ≤ 32 (≤ 16) channels 2 (4) pixels per register, and stride 1 takes pixels in pairs:
        // widths up to 19 give rows with several full steps of 4 pairs plus every kind of leftover. Stride 1 takes
        // two rows at once in 2×2 blocks (1 or 2 pixels per register) and addresses the blocks whose windows lie
        // inside the image from one pointer, as stride 2 does for its inside pixels: the last four shapes have such
        // blocks and pixels for every kind of block, next to border ones, with odd heights (a lone last row).
        let shapes: [(batch: Int, height: Int, width: Int, channels: Int)] = [
            (1, 1, 1, 1), (1, 3, 5, 3), (2, 4, 4, 16), (1, 7, 6, 17), (1, 5, 9, 40), (2, 6, 7, 96), (1, 2, 3, 8), (1, 3, 4, 130),
            (1, 3, 19, 48), (1, 4, 13, 33), (2, 3, 11, 160), (1, 2, 17, 64),
            (2, 9, 12, 96), (1, 8, 11, 160), (2, 7, 13, 16), (1, 6, 10, 224),
        ]
        for (batch, height, width, channels) in shapes {
            for stride in [1, 2] {
                for inputZeroPoint: UInt8 in [0, 128, 255] {
                    for bits in 2...8 {
                        let conv = DepthwiseCase(channels: channels, stride: stride, weightBits: 10 - bits,
                                                 inputZeroPoint: inputZeroPoint,
                                                 output: random.outputQuantization(bits: bits), random: &random)
                        let input = random.bytes(batch * height * width * channels)
                        let actual = conv.run(input, batch: batch, height: height, width: width, isa: isa)
                        let expected = conv.reference(input, batch: batch, height: height, width: width)
                        if let problem = firstMismatch(actual, expected) {
                            XCTFail("\(isa) dw \(batch)×\(height)×\(width)×\(channels) s\(stride) zp=\(inputZeroPoint) bits=\(bits): \(problem)")
                            return
                        }
                    }
                }
            }
        }
    }

    private func checkConvolution(isa: KernelISA) throws {
        try requireISA(isa)
        var random = SeededRandom(seed: 4)
        typealias Geometry = QuantizedConvolution.Geometry
        // The stem (3×3, one input channel, any stride, padding 1), RGB stems, asymmetric kernels and padding.
        let cases: [(inC: Int, outC: Int, g: Geometry, height: Int, width: Int)] = [
            (1, 16, Geometry(kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1), 9, 8),
            (1, 16, Geometry(kernelHeight: 3, kernelWidth: 3, strideHeight: 2, strideWidth: 2,
                             padTop: 1, padLeft: 1, padBottom: 1, padRight: 1), 9, 8),
            (1, 5, Geometry(kernelHeight: 3, kernelWidth: 3, strideHeight: 3, strideWidth: 3,
                            padTop: 1, padLeft: 1, padBottom: 1, padRight: 1), 10, 7),
            (3, 32, Geometry(kernelHeight: 3, kernelWidth: 3, strideHeight: 2, strideWidth: 2,
                             padTop: 0, padLeft: 0, padBottom: 1, padRight: 1), 11, 12),
            (2, 7, Geometry(kernelHeight: 5, kernelWidth: 3, strideHeight: 1, strideWidth: 2,
                            padTop: 2, padLeft: 0, padBottom: 1, padRight: 3), 6, 5),
            (4, 3, Geometry(kernelHeight: 1, kernelWidth: 1), 3, 3),
            // One input channel, kernel rows of 2-4 taps: patches read from the bordered image on AVX-512 VNNI.
            (1, 7, Geometry(kernelHeight: 2, kernelWidth: 4, strideHeight: 1, strideWidth: 3,
                            padTop: 0, padLeft: 2, padBottom: 1, padRight: 0), 6, 11),
            (1, 33, Geometry(kernelHeight: 5, kernelWidth: 2, strideHeight: 2, strideWidth: 1,
                             padTop: 2, padLeft: 1, padBottom: 2, padRight: 1), 7, 19),
        ]
        for (inC, outC, geometry, height, width) in cases {
            for inputZeroPoint: UInt8 in [0, 128, 255] {
                for bits in [2, 5, 8] {
                    let conv = ConvolutionCase(inputChannels: inC, outputChannels: outC, geometry: geometry,
                                               weightBits: bits, inputZeroPoint: inputZeroPoint,
                                               output: random.outputQuantization(bits: 10 - bits), random: &random)
                    for batch in [1, 2] {
                        let input = random.bytes(batch * height * width * inC)
                        let actual = conv.run(input, batch: batch, height: height, width: width, isa: isa, threads: 1)
                        let expected = conv.reference(input, batch: batch, height: height, width: width)
                        if let problem = firstMismatch(actual, expected) {
                            XCTFail("\(isa) conv \(geometry) in \(inC) out \(outC) zp=\(inputZeroPoint): \(problem)")
                            return
                        }
                    }
                }
            }
        }
        // Several tiles of patches spread over two threads.
        let stem = ConvolutionCase(inputChannels: 1, outputChannels: 16,
                                   geometry: Geometry(kernelHeight: 3, kernelWidth: 3,
                                                      padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
                                   weightBits: 8, inputZeroPoint: 42, output: OutputQuantization(zeroPoint: 0).relu(),
                                   random: &random)
        let images = random.bytes(128 * 32 * 32)
        let threaded = stem.run(images, batch: 128, height: 32, width: 32, isa: isa, threads: 2)
        XCTAssertNil(firstMismatch(threaded, stem.reference(images, batch: 128, height: 32, width: 32)), "\(isa) stem")
    }
}

/// A depthwise convolution with the values it was built from.
private struct DepthwiseCase {
    let op: QuantizedDepthwiseConvolution3x3
    let weights: [Int8]
    let bias: [Int32]
    let multipliers: [QuantizedMultiplier]

    init(channels: Int, stride: Int, weightBits: Int, inputZeroPoint: UInt8, output: OutputQuantization,
         random: inout SeededRandom) {
        self.init(channels: channels, stride: stride, weights: random.weights(channels * 9, bits: weightBits),
                  bias: random.bias(channels), multipliers: random.multipliers(channels, depth: 9, weightBits: weightBits),
                  inputZeroPoint: inputZeroPoint, output: output)
    }

    /// `multipliers`: one per channel, or one for all.
    init(channels: Int, stride: Int, weights: [Int8], bias: [Int32], multipliers: [QuantizedMultiplier],
         inputZeroPoint: UInt8, output: OutputQuantization) {
        self.weights = weights
        self.bias = bias
        self.multipliers = multipliers.count == 1 ? Array(repeating: multipliers[0], count: channels) : multipliers
        op = QuantizedDepthwiseConvolution3x3(channels: channels, stride: stride, weights: weights, bias: bias,
                                              multipliers: self.multipliers, inputZeroPoint: inputZeroPoint,
                                              output: output)
    }

    func run(_ input: [UInt8], batch: Int, height: Int, width: Int, isa: KernelISA, threads: Int = 1) -> [UInt8] {
        let (oh, ow) = op.outputSize(height: height, width: width)
        var y = [UInt8](repeating: 0, count: batch * oh * ow * op.channels)
        input.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                op.run(input: x, batch: batch, height: height, width: width, output: y, isa: isa, threads: threads)
            }
        }
        return y
    }

    /// Out-of-image taps are skipped: they would read the zero point, contributing (z − z)·w = 0.
    func reference(_ input: [UInt8], batch: Int, height: Int, width: Int) -> [UInt8] {
        let c = op.channels, s = op.stride, z = Int64(op.inputZeroPoint)
        let oh = (height - 1) / s + 1, ow = (width - 1) / s + 1
        var y = [UInt8](repeating: 0, count: batch * oh * ow * c)
        for n in 0..<batch {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    for ch in 0..<c {
                        var acc = Int64(bias[ch])
                        for ky in 0..<3 {
                            for kx in 0..<3 {
                                let iy = oy * s - 1 + ky, ix = ox * s - 1 + kx
                                guard iy >= 0, iy < height, ix >= 0, ix < width else { continue }
                                let x = Int64(input[((n * height + iy) * width + ix) * c + ch])
                                acc += (x - z) * Int64(weights[ch * 9 + ky * 3 + kx])
                            }
                        }
                        y[((n * oh + oy) * ow + ox) * c + ch] = Reference.requantize(acc, multipliers[ch], op.output)
                    }
                }
            }
        }
        return y
    }
}

/// A general convolution with the values it was built from (weights in ONNX `[O, I, kH, kW]` order).
private struct ConvolutionCase {
    let op: QuantizedConvolution
    let weights: [Int8]
    let bias: [Int32]
    let multipliers: [QuantizedMultiplier]

    init(inputChannels: Int, outputChannels: Int, geometry: QuantizedConvolution.Geometry, weightBits: Int,
         inputZeroPoint: UInt8, output: OutputQuantization, random: inout SeededRandom) {
        let depth = inputChannels * geometry.kernelHeight * geometry.kernelWidth
        weights = random.weights(outputChannels * depth, bits: weightBits)
        bias = random.bias(outputChannels)
        multipliers = random.multipliers(outputChannels, depth: depth, weightBits: weightBits)
        op = QuantizedConvolution(inputChannels: inputChannels, outputChannels: outputChannels, geometry: geometry,
                                  weights: weights, bias: bias, multipliers: multipliers,
                                  inputZeroPoint: inputZeroPoint, output: output)
    }

    func run(_ input: [UInt8], batch: Int, height: Int, width: Int, isa: KernelISA, threads: Int) -> [UInt8] {
        let (oh, ow) = op.outputSize(height: height, width: width)
        var y = [UInt8](repeating: 0, count: batch * oh * ow * op.outputChannels)
        var scratch = [UInt8](repeating: 0, count: op.scratchByteCount(threads: threads, height: height, width: width))
        input.withUnsafeBufferPointer { x in
            y.withUnsafeMutableBufferPointer { y in
                scratch.withUnsafeMutableBufferPointer { scratch in
                    op.run(input: x, batch: batch, height: height, width: width, output: y, scratch: scratch,
                           isa: isa, threads: threads)
                }
            }
        }
        return y
    }

    func reference(_ input: [UInt8], batch: Int, height: Int, width: Int) -> [UInt8] {
        let g = op.geometry, inC = op.inputChannels, outC = op.outputChannels, z = Int64(op.gemm.inputZeroPoint)
        let (oh, ow) = op.outputSize(height: height, width: width)
        var y = [UInt8](repeating: 0, count: batch * oh * ow * outC)
        for n in 0..<batch {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    for o in 0..<outC {
                        var acc = Int64(bias[o])
                        for i in 0..<inC {
                            for ky in 0..<g.kernelHeight {
                                for kx in 0..<g.kernelWidth {
                                    let iy = oy * g.strideHeight + ky - g.padTop
                                    let ix = ox * g.strideWidth + kx - g.padLeft
                                    guard iy >= 0, iy < height, ix >= 0, ix < width else { continue }
                                    let x = Int64(input[((n * height + iy) * width + ix) * inC + i])
                                    let w = weights[((o * inC + i) * g.kernelHeight + ky) * g.kernelWidth + kx]
                                    acc += (x - z) * Int64(w)
                                }
                            }
                        }
                        y[((n * oh + oy) * ow + ox) * outC + o] = Reference.requantize(acc, multipliers[o], op.gemm.output)
                    }
                }
            }
        }
        return y
    }
}
