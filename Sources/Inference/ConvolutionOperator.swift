import Graph
import Tensor

/// 2-D convolution (NCHW, OIHW weights, groups). Depthwise convolutions (one input channel per group) use a
/// direct loop; every other convolution is im2col + GEMM with the weights of each group packed once here.
struct ConvolutionOperator: FloatOperator {
    let geometry: WindowGeometry
    let groups: Int
    let outputChannels: Int
    let inputChannelsPerGroup: Int
    let bias: [Float]
    /// GEMM path: one packed `(outC/groups) × (inC/groups·kH·kW)` matrix per group.
    let packedWeights: [PackedMatrixA]
    /// Depthwise path: raw OIHW weights.
    let depthwiseWeights: [Float]?

    init(node: Node, weights: Initializer, bias: [Float]?) throws {
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
        self.bias = bias ?? [Float](repeating: 0, count: outputChannels)
        let values = weights.storage.floats
        if inputChannelsPerGroup == 1 && groups == outputChannels && groups > 1 {
            depthwiseWeights = values
            packedWeights = []
        } else {
            depthwiseWeights = nil
            let rows = outputChannels / groups, depth = inputChannelsPerGroup * kernel[0] * kernel[1]
            packedWeights = (0..<groups).map { group in
                values.withUnsafeBufferPointer { buffer in
                    PackedMatrixA(rows: rows, depth: depth, a: buffer.baseAddress! + group * rows * depth, lda: depth)
                }
            }
        }
    }

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let threads = context.threads
        let x = try inputs.required(0)
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let outH = geometry.outputHeight(inputHeight: height), outW = geometry.outputWidth(inputWidth: width)
        let outPlane = outH * outW
        var output = context.buffer(count: batch * outputChannels * outPlane, repeating: 0)
        // Start from the bias so the GEMM can accumulate into the output directly.
        output.withUnsafeMutableBufferPointer { buffer in
            for plane in 0..<(batch * outputChannels) {
                (buffer.baseAddress! + plane * outPlane).update(repeating: bias[plane % outputChannels], count: outPlane)
            }
        }
        x.data.withUnsafeBufferPointer { inputBuffer in
            output.withUnsafeMutableBufferPointer { outputBuffer in
                let source = Parallel.SharedPointer(inputBuffer.baseAddress!)
                let destination = Parallel.SharedMutablePointer(outputBuffer.baseAddress!)
                if let depthwiseWeights {
                    depthwiseWeights.withUnsafeBufferPointer { weightBuffer in
                        let weights = Parallel.SharedPointer(weightBuffer.baseAddress!)
                        let g = geometry
                        let paddedHeight = height + g.padTop + g.padBottom, paddedWidth = width + g.padLeft + g.padRight
                        // Small layers run on one thread: a hand-off costs more than it saves.
                        let work = batch * channels * outPlane * g.kernelHeight * g.kernelWidth
                        Parallel.forEachChunk(count: batch * channels, threads: work >= 262_144 ? threads : 1) { planes in
                            // One zero-bordered copy of the plane per worker: the tap loops then need no bounds checks.
                            withUnsafeTemporaryAllocation(of: Float.self, capacity: paddedHeight * paddedWidth) { padded in
                                padded.initialize(repeating: 0)
                                for plane in planes {
                                    let input = source.base + plane * height * width
                                    for y in 0..<height {
                                        (padded.baseAddress! + (y + g.padTop) * paddedWidth + g.padLeft).update(from: input + y * width, count: width)
                                    }
                                    depthwisePlane(padded: padded.baseAddress!, paddedWidth: paddedWidth,
                                                   weights: weights.base + (plane % channels) * g.kernelHeight * g.kernelWidth,
                                                   output: destination.base + plane * outPlane, outH: outH, outW: outW)
                                }
                            }
                        }
                    }
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

    /// One image through im2col + GEMM, group by group.
    private func convolveImage(_ input: UnsafePointer<Float>, height: Int, width: Int,
                               output: UnsafeMutablePointer<Float>, threads: Int) {
        let outH = geometry.outputHeight(inputHeight: height), outW = geometry.outputWidth(inputWidth: width)
        let outPlane = outH * outW
        let rowsPerGroup = outputChannels / groups
        let depth = inputChannelsPerGroup * geometry.kernelHeight * geometry.kernelWidth
        let groupInput = inputChannelsPerGroup * height * width
        if geometry.isPointwise {
            for group in 0..<groups {
                GEMM.multiply(packedA: packedWeights[group], n: outPlane, b: input + group * groupInput, ldb: outPlane,
                              c: output + group * rowsPerGroup * outPlane, ldc: outPlane, accumulate: true, threads: threads)
            }
            return
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: depth * outPlane) { columns in
            for group in 0..<groups {
                Im2col.unfold(input: input + group * groupInput, channels: inputChannelsPerGroup, height: height, width: width,
                              geometry: geometry, output: columns.baseAddress!)
                GEMM.multiply(packedA: packedWeights[group], n: outPlane, b: columns.baseAddress!, ldb: outPlane,
                              c: output + group * rowsPerGroup * outPlane, ldc: outPlane, accumulate: true, threads: threads)
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
