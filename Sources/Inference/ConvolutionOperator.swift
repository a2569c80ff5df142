import Graph
import Tensor

/// 2-D convolution (NCHW, OIHW weights, groups), optionally with a following BatchNormalization folded into its
/// weights and a following Relu/Clip fused into its output pass (`ConvolutionFusion` decides which nodes fuse).
///
/// Paths: 3×3 depthwise convolutions (dilation 1, stride 1 or 2) use `DepthwiseConvolution3x3`; other depthwise
/// ones a direct loop; everything else is GEMM (the image itself for 1×1, im2col otherwise) with the weights of
/// each group packed once here and bias + clamp applied by the GEMM's epilogue, so the output is written once.
struct ConvolutionOperator: FloatOperator {
    let geometry: WindowGeometry
    let groups: Int
    let outputChannels: Int
    let inputChannelsPerGroup: Int
    /// Bias after folding (zero when the node had none and nothing was folded).
    let bias: [Float]
    /// Output clamp (ReLU: 0…∞, ReLU6: 0…6; −∞…∞ when nothing was fused).
    let minimum: Float, maximum: Float
    /// GEMM path: one packed `(outC/groups) × (inC/groups·kH·kW)` matrix per group.
    let packedWeights: [PackedMatrixA]
    /// Depthwise path: OIHW weights (after folding).
    let depthwiseWeights: [Float]?
    let instructionSet: FP32InstructionSet
    let profileLabel: String

    /// `batchNormalization` folds `y = x·multiplier[c] + shift[c]` into the weights and bias.
    init(node: Node, weights: Initializer, bias: [Float]?, batchNormalization: (multiplier: [Float], shift: [Float])? = nil,
         clamp: (minimum: Float, maximum: Float)? = nil, instructionSet: FP32InstructionSet = .preferred) throws {
        let kernel = Array(weights.shape[2...3])
        let window = try node.windowAttributes(kernel: kernel)
        geometry = WindowGeometry(kernelHeight: kernel[0], kernelWidth: kernel[1],
                                  strideHeight: window.strides[0], strideWidth: window.strides[1],
                                  padTop: window.pads[0], padLeft: window.pads[1],
                                  padBottom: window.pads[2], padRight: window.pads[3],
                                  dilationHeight: window.dilations[0], dilationWidth: window.dilations[1])
        groups = node.int("group", default: 1)
        outputChannels = weights.shape[0]
        inputChannelsPerGroup = weights.shape[1]
        self.instructionSet = instructionSet
        var values = weights.storage.floats
        var folded = bias ?? [Float](repeating: 0, count: outputChannels)
        if let batchNormalization {
            let perChannel = values.count / max(outputChannels, 1)
            for channel in 0..<outputChannels {
                let multiplier = batchNormalization.multiplier[channel]
                for i in 0..<perChannel { values[channel * perChannel + i] *= multiplier }
                folded[channel] = folded[channel] * multiplier + batchNormalization.shift[channel]
            }
        }
        self.bias = folded
        minimum = clamp?.minimum ?? -.infinity
        maximum = clamp?.maximum ?? .infinity
        let fusedSuffix = (batchNormalization != nil ? "+BN" : "") + (clamp != nil ? "+clamp" : "")
        if inputChannelsPerGroup == 1 && groups == outputChannels && groups > 1 {
            depthwiseWeights = values
            packedWeights = []
            profileLabel = "Conv depthwise \(kernel[0])x\(kernel[1])/s\(window.strides[0])\(fusedSuffix)"
        } else {
            depthwiseWeights = nil
            let rows = outputChannels / groups, depth = inputChannelsPerGroup * kernel[0] * kernel[1]
            packedWeights = (0..<groups).map { group in
                values.withUnsafeBufferPointer { buffer in
                    PackedMatrixA(rows: rows, depth: depth, a: buffer.baseAddress! + group * rows * depth, lda: depth,
                                  instructionSet: instructionSet)
                }
            }
            profileLabel = (geometry.isPointwise ? "Conv 1x1 (GEMM)" : "Conv im2col+GEMM") + fusedSuffix
        }
    }

    /// True when the fast 3×3 depthwise kernel applies.
    private var usesDepthwise3x3: Bool {
        let g = geometry
        return g.kernelHeight == 3 && g.kernelWidth == 3 && g.dilationHeight == 1 && g.dilationWidth == 1
            && g.strideHeight == g.strideWidth && (g.strideHeight == 1 || g.strideHeight == 2)
    }

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let threads = context.threads
        let x = try inputs.required(0)
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let outH = geometry.outputHeight(inputHeight: height), outW = geometry.outputWidth(inputWidth: width)
        let outPlane = outH * outW
        // Every path below writes every output element, so the buffer needs no initial value.
        var output = context.uninitializedBuffer(count: batch * outputChannels * outPlane)
        x.data.withUnsafeBufferPointer { inputBuffer in
            output.withUnsafeMutableBufferPointer { outputBuffer in
                let source = Parallel.SharedPointer(inputBuffer.baseAddress!)
                let destination = Parallel.SharedMutablePointer(outputBuffer.baseAddress!)
                if depthwiseWeights != nil {
                    runDepthwise(source: source, destination: destination, batch: batch, channels: channels,
                                 height: height, width: width, outH: outH, outW: outW, threads: threads)
                } else if batch >= threads {
                    Parallel.forEach(count: batch, threads: threads) { n in
                        convolveImage(source.base + n * channels * height * width, height: height, width: width,
                                      output: destination.base + n * outputChannels * outPlane, threads: 1)
                    }
                } else {
                    for n in 0..<batch {
                        convolveImage(source.base + n * channels * height * width, height: height, width: width,
                                      output: destination.base + n * outputChannels * outPlane, threads: threads)
                    }
                }
            }
        }
        return [Tensor(shape: [batch, outputChannels, outH, outW], data: output)]
    }

    private func runDepthwise(source: Parallel.SharedPointer<Float>, destination: Parallel.SharedMutablePointer<Float>,
                              batch: Int, channels: Int, height: Int, width: Int, outH: Int, outW: Int, threads: Int) {
        let g = geometry, outPlane = outH * outW
        // Small layers run on one thread: a hand-off costs more than it saves.
        let work = batch * channels * outPlane * g.kernelHeight * g.kernelWidth
        let workers = work >= 262_144 ? threads : 1
        depthwiseWeights!.withUnsafeBufferPointer { weightBuffer in
            let weights = Parallel.SharedPointer(weightBuffer.baseAddress!)
            if usesDepthwise3x3 {
                bias.withUnsafeBufferPointer { biasBuffer in
                    DepthwiseConvolution3x3.allPlanes(
                        batch * channels, channels: channels, input: source.base, height: height, width: width,
                        stride: g.strideHeight, padTop: g.padTop, padLeft: g.padLeft, outputHeight: outH,
                        outputWidth: outW, weights: weights.base, bias: biasBuffer.baseAddress!, minimum: minimum,
                        maximum: maximum, output: destination.base, threads: workers, instructionSet: instructionSet)
                }
                return
            }
            let paddedHeight = height + g.padTop + g.padBottom, paddedWidth = width + g.padLeft + g.padRight
            Parallel.forEachChunk(count: batch * channels, threads: workers) { planes in
                // One zero-bordered copy of the plane per worker: the tap loops then need no bounds checks.
                withUnsafeTemporaryAllocation(of: Float.self, capacity: paddedHeight * paddedWidth) { padded in
                    padded.initialize(repeating: 0)
                    for plane in planes {
                        let input = source.base + plane * height * width
                        for y in 0..<height {
                            (padded.baseAddress! + (y + g.padTop) * paddedWidth + g.padLeft).update(from: input + y * width, count: width)
                        }
                        let channel = plane % channels
                        let output = destination.base + plane * outPlane
                        output.update(repeating: bias[channel], count: outPlane)
                        depthwisePlane(padded: padded.baseAddress!, paddedWidth: paddedWidth,
                                       weights: weights.base + channel * g.kernelHeight * g.kernelWidth,
                                       output: output, outH: outH, outW: outW)
                        if minimum > -.infinity || maximum < .infinity {
                            for i in 0..<outPlane {
                                let v = output[i]
                                output[i] = v < minimum ? minimum : (v > maximum ? maximum : v)
                            }
                        }
                    }
                }
            }
        }
    }

    /// One image through im2col + GEMM, group by group; the GEMM epilogue adds the bias and clamps.
    private func convolveImage(_ input: UnsafePointer<Float>, height: Int, width: Int,
                               output: UnsafeMutablePointer<Float>, threads: Int) {
        let outH = geometry.outputHeight(inputHeight: height), outW = geometry.outputWidth(inputWidth: width)
        let outPlane = outH * outW
        let rowsPerGroup = outputChannels / groups
        let depth = inputChannelsPerGroup * geometry.kernelHeight * geometry.kernelWidth
        let groupInput = inputChannelsPerGroup * height * width
        bias.withUnsafeBufferPointer { biasBuffer in
            func multiply(group: Int, b: UnsafePointer<Float>) {
                GEMM.multiply(packedA: packedWeights[group], n: outPlane, b: b, ldb: outPlane,
                              c: output + group * rowsPerGroup * outPlane, ldc: outPlane, threads: threads,
                              epilogue: GEMMEpilogue(bias: biasBuffer.baseAddress! + group * rowsPerGroup,
                                                     minimum: minimum, maximum: maximum))
            }
            if geometry.isPointwise {
                for group in 0..<groups { multiply(group: group, b: input + group * groupInput) }
                return
            }
            withUnsafeTemporaryAllocation(of: Float.self, capacity: depth * outPlane) { columns in
                for group in 0..<groups {
                    Im2col.unfold(input: input + group * groupInput, channels: inputChannelsPerGroup, height: height,
                                  width: width, geometry: geometry, output: columns.baseAddress!)
                    multiply(group: group, b: columns.baseAddress!)
                }
            }
        }
    }

    /// One channel of a depthwise convolution from its zero-padded copy, accumulated into `output` (which holds
    /// the bias already). Borders stay zero between planes because every plane writes the same interior.
    /// Each output element sums all taps in registers (8 or 4 columns at a time when the stride is 1), so the output
    /// row is loaded and stored once instead of once per tap.
    private func depthwisePlane(padded: UnsafePointer<Float>, paddedWidth: Int, weights: UnsafePointer<Float>,
                                output: UnsafeMutablePointer<Float>, outH: Int, outW: Int) {
        let g = geometry
        for oy in 0..<outH {
            let row = output + oy * outW
            let window = padded + oy * g.strideHeight * paddedWidth
            var ox = 0
            if g.strideWidth == 1 {
                while ox + 8 <= outW {
                    var sum = UnsafeRawPointer(row + ox).loadUnaligned(as: SIMD8<Float>.self)
                    for ky in 0..<g.kernelHeight {
                        let source = window + ky * g.dilationHeight * paddedWidth + ox
                        for kx in 0..<g.kernelWidth {
                            let tap = UnsafeRawPointer(source + kx * g.dilationWidth).loadUnaligned(as: SIMD8<Float>.self)
                            sum += SIMD8(repeating: weights[ky * g.kernelWidth + kx]) * tap
                        }
                    }
                    UnsafeMutableRawPointer(row + ox).storeBytes(of: sum, as: SIMD8<Float>.self)
                    ox += 8
                }
                // Late MobileNet stages have 4- to 7-wide planes: a 4-wide step keeps them vectorised too.
                if ox + 4 <= outW {
                    var sum = UnsafeRawPointer(row + ox).loadUnaligned(as: SIMD4<Float>.self)
                    for ky in 0..<g.kernelHeight {
                        let source = window + ky * g.dilationHeight * paddedWidth + ox
                        for kx in 0..<g.kernelWidth {
                            let tap = UnsafeRawPointer(source + kx * g.dilationWidth).loadUnaligned(as: SIMD4<Float>.self)
                            sum += SIMD4(repeating: weights[ky * g.kernelWidth + kx]) * tap
                        }
                    }
                    UnsafeMutableRawPointer(row + ox).storeBytes(of: sum, as: SIMD4<Float>.self)
                    ox += 4
                }
            }
            while ox < outW {
                var sum = row[ox]
                for ky in 0..<g.kernelHeight {
                    let source = window + ky * g.dilationHeight * paddedWidth + ox * g.strideWidth
                    for kx in 0..<g.kernelWidth { sum += weights[ky * g.kernelWidth + kx] * source[kx * g.dilationWidth] }
                }
                row[ox] = sum
                ox += 1
            }
        }
    }
}
