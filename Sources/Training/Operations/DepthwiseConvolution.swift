import Tensor

/// Depthwise convolution (one input and one output channel per group) computed directly: im2col would copy
/// every input pixel kH·kW times for a GEMM of a single row. 3×3 windows with stride 1 or 2 (MobileNet's) run the
/// C kernels of `DepthwiseConvolution3x3` forward and backward; other windows run per-plane loops over
/// zero-bordered copies.
enum DepthwiseConvolution {
    static func forward(_ x: Variable, weight: Variable, bias: Variable?, geometry g: WindowGeometry,
                        context: ForwardContext) -> Variable {
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let outH = g.outputHeight(inputHeight: height), outW = g.outputWidth(inputWidth: width)
        let plane = outH * outW, taps = g.kernelHeight * g.kernelWidth
        let paddedH = height + g.padTop + g.padBottom, paddedW = width + g.padLeft + g.padRight
        // Every plane is set to its bias below before the taps accumulate.
        var output = [Float](unsafeUninitializedCapacity: batch * channels * plane) { _, initialized in initialized = batch * channels * plane }
        let biasValues = bias?.value.data ?? [Float](repeating: 0, count: channels)
        let useSharedKernel = isPlain3x3(g) && (g.strideHeight == 1 || g.strideHeight == 2)
        if useSharedKernel, let deferred = x.pendingAffine {
            // A deferred BatchNorm output: each image is computed into a buffer (hundreds of KB, in cache) just
            // before the kernel reads it.
            let imageInput = channels * height * width
            let scratchCount = DepthwiseConvolution3x3.scratchCount(height: height, width: width, stride: g.strideHeight,
                                                                    padTop: g.padTop, padLeft: g.padLeft,
                                                                    outputHeight: outH, outputWidth: outW)
            deferred.withImageWriter { writer in
                weight.value.data.withUnsafeBufferPointer { weights in
                    biasValues.withUnsafeBufferPointer { biasBuffer in
                        output.withUnsafeMutableBufferPointer { out in
                            let target = Parallel.SharedMutablePointer(out.baseAddress!)
                            let w = Parallel.SharedPointer(weights.baseAddress!), b = Parallel.SharedPointer(biasBuffer.baseAddress!)
                            Parallel.forEachChunk(count: batch, threads: context.threads) { images in
                                withUnsafeTemporaryAllocation(of: Float.self, capacity: imageInput + max(1, scratchCount)) { buffer in
                                    let image = buffer.baseAddress!, scratch = buffer.baseAddress! + imageInput
                                    for n in images {
                                        writer.writeImages(n..<(n + 1), into: image)
                                        DepthwiseConvolution3x3.planes(
                                            0..<channels, channels: channels, input: image, height: height, width: width,
                                            stride: g.strideHeight, padTop: g.padTop, padLeft: g.padLeft, outputHeight: outH,
                                            outputWidth: outW, weights: w.base, bias: b.base,
                                            output: target.base + n * channels * plane, scratch: scratch)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } else {
            x.value.data.withUnsafeBufferPointer { input in
                weight.value.data.withUnsafeBufferPointer { weights in
                    output.withUnsafeMutableBufferPointer { out in
                        let source = Parallel.SharedPointer(input.baseAddress!), target = Parallel.SharedMutablePointer(out.baseAddress!)
                        let w = Parallel.SharedPointer(weights.baseAddress!)
                        if useSharedKernel {
                            // The inference engine's 3×3 kernel (AVX-512 reads the unpadded plane with masked lanes):
                            // no copy into a padded buffer and 16-lane rows instead of 4.
                            biasValues.withUnsafeBufferPointer { biasBuffer in
                                DepthwiseConvolution3x3.allPlanes(
                                    batch * channels, channels: channels, input: source.base, height: height, width: width,
                                    stride: g.strideHeight, padTop: g.padTop, padLeft: g.padLeft, outputHeight: outH,
                                    outputWidth: outW, weights: w.base, bias: biasBuffer.baseAddress!, output: target.base,
                                    threads: context.threads)
                            }
                            return
                        }
                        Parallel.forEachChunk(count: batch * channels, threads: context.threads) { planes in
                            withUnsafeTemporaryAllocation(of: Float.self, capacity: paddedH * paddedW) { padded in
                                padded.initialize(repeating: 0)
                                for index in planes {
                                    let c = index % channels
                                    copyIntoPadded(source.base + index * height * width, height: height, width: width,
                                                   geometry: g, padded: padded.baseAddress!, paddedWidth: paddedW)
                                    let y = target.base + index * plane
                                    y.update(repeating: biasValues[c], count: plane)
                                    forwardPlane(padded: padded.baseAddress!, paddedWidth: paddedW, weights: w.base + c * taps,
                                                 output: y, outH: outH, outW: outW, geometry: g)
                                }
                            }
                        }
                    }
                }
            }
        }
        let result = Variable(Tensor(shape: [batch, channels, outH, outW], data: output),
                              requiresGradient: context.needsGradient(x, weight, bias))
        guard result.requiresGradient else { return result }
        context.record(result) { [threads = context.threads] in
            if let bias, bias.requiresGradient {
                Convolution.reduceBias(result.gradient, batch: batch, channels: channels, plane: plane, into: bias)
            }
            let needInput = x.requiresGradient, needWeight = weight.requiresGradient
            guard needInput || needWeight else { return }
            if isPlain3x3(g), DepthwiseConvolution3x3.backwardSupports(stride: g.strideHeight, padTop: g.padTop,
                                                                       padLeft: g.padLeft) {
                // The C kernels (`DepthwiseConvolution3x3.backward`: workers over image ranges).
                var weightGradient = [Float](repeating: 0, count: needWeight ? channels * taps : 0)
                // A deferred input (`x.pendingAffine`): the C kernel computes each chunk of input planes as it reads
                // them and, when it stores the whole input gradient, takes the deferring BatchNorm's backward sums
                // over it too. A deferred output gradient likewise.
                func backward(_ inputGradient: UnsafeMutablePointer<Float>?, accumulate: Bool) {
                    let deferred = x.pendingAffine
                    let takeSums = deferred != nil && inputGradient != nil && !accumulate
                    let workers = max(1, min(threads, batch))
                    var sums = [Double](repeating: 0, count: takeSums ? workers * 2 * channels : 0)
                    x.withKernelInput { input, inputAffine in
                        weight.value.data.withUnsafeBufferPointer { weights in
                            result.withOutputGradient { outputGradient, gradientAffine in
                                weightGradient.withUnsafeMutableBufferPointer { dW in
                                    sums.withUnsafeMutableBufferPointer { sumBuffer in
                                        DepthwiseConvolution3x3.backward(
                                            batch: batch, channels: channels, input: input,
                                            inputAffine: inputAffine.map {
                                                (scale: $0.scale, offset: $0.offset, clamp: $0.clamp,
                                                 gradientSums: takeSums ? sumBuffer.baseAddress : nil)
                                            },
                                            outputGradient: outputGradient, outputGradientAffine: gradientAffine,
                                            weights: weights.baseAddress!,
                                            height: height, width: width, stride: g.strideHeight, padTop: g.padTop,
                                            padLeft: g.padLeft, outputHeight: outH, outputWidth: outW,
                                            weightGradient: needWeight ? dW.baseAddress! : nil, inputGradient: inputGradient,
                                            accumulate: accumulate, threads: threads)
                                    }
                                }
                            }
                        }
                    }
                    if takeSums { deferred!.gradientSums = ChannelSums.combine(sums, workers: workers, channels: channels) }
                }
                if needInput {
                    x.writeGradient { backward($0, accumulate: !$1) }
                } else {
                    backward(nil, accumulate: false)
                }
                if needWeight {
                    weight.accumulateGradient { gradient in
                        for i in 0..<(channels * taps) { gradient[i] += weightGradient[i] }
                    }
                }
                return
            }
            // Other windows: per plane over zero-bordered copies, scattering into a padded input gradient. Workers
            // take contiguous image ranges (planes are then read in memory order), each with its own
            // weight-gradient partial, summed in worker order afterwards.
            let workers = max(1, min(threads, batch))
            var weightGradient = [Float](repeating: 0, count: workers * channels * taps)
            // `overwrite`: the input gradient is fresh, so each plane is stored rather than added.
            func backwardPass(_ inputGradientBase: UnsafeMutablePointer<Float>?, overwrite: Bool) {
                x.value.data.withUnsafeBufferPointer { input in
                    weight.value.data.withUnsafeBufferPointer { weights in
                        result.gradient.withUnsafeBufferPointer { outputGradient in
                            weightGradient.withUnsafeMutableBufferPointer { dWBuffer in
                                let source = Parallel.SharedPointer(input.baseAddress!), w = Parallel.SharedPointer(weights.baseAddress!)
                                let dY = Parallel.SharedPointer(outputGradient.baseAddress!)
                                let dW = Parallel.SharedMutablePointer(dWBuffer.baseAddress!)
                                let dX = inputGradientBase.map { Parallel.SharedMutablePointer($0) }
                                Parallel.forEach(count: workers, threads: workers) { worker in
                                    let images = Parallel.chunk(worker, of: workers, count: batch)
                                    let dW = Parallel.SharedMutablePointer(dW.base + worker * channels * taps)
                                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * paddedH * paddedW) { buffers in
                                        let padded = buffers.baseAddress!, paddedGradient = buffers.baseAddress! + paddedH * paddedW
                                        padded.initialize(repeating: 0, count: paddedH * paddedW)
                                        for n in images {
                                            for c in 0..<channels {
                                                let index = n * channels + c
                                                if needWeight {
                                                    copyIntoPadded(source.base + index * height * width, height: height, width: width,
                                                                   geometry: g, padded: padded, paddedWidth: paddedW)
                                                }
                                                if dX != nil { paddedGradient.initialize(repeating: 0, count: paddedH * paddedW) }
                                                backwardPlane(padded: padded, paddedGradient: dX == nil ? nil : paddedGradient,
                                                              paddedWidth: paddedW, weights: w.base + c * taps,
                                                              weightGradient: needWeight ? dW.base + c * taps : nil,
                                                              outputGradient: dY.base + index * plane, outH: outH, outW: outW, geometry: g)
                                                if let dX {
                                                    let target = dX.base + index * height * width
                                                    for yy in 0..<height {
                                                        let row = paddedGradient + (yy + g.padTop) * paddedW + g.padLeft
                                                        if overwrite {
                                                            (target + yy * width).update(from: row, count: width)
                                                        } else {
                                                            VectorMath.add(row, into: target + yy * width, count: width)
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            if needInput {
                x.writeGradient { backwardPass($0, overwrite: $1) }
            } else {
                backwardPass(nil, overwrite: false)
            }
            if needWeight {
                weight.accumulateGradient { gradient in
                    for worker in 0..<workers {
                        for i in 0..<(channels * taps) { gradient[i] += weightGradient[worker * channels * taps + i] }
                    }
                }
            }
        }
        return result
    }

    /// 3×3 kernel without dilation, same stride on both axes: the C kernels apply (for stride 1 or 2).
    @inline(__always)
    static func isPlain3x3(_ g: WindowGeometry) -> Bool {
        g.kernelHeight == 3 && g.kernelWidth == 3 && g.dilationHeight == 1 && g.dilationWidth == 1 && g.strideHeight == g.strideWidth
    }

    /// Copies one plane into the interior of a zero-bordered buffer (borders are never written, so they stay 0).
    @inline(__always)
    static func copyIntoPadded(_ plane: UnsafePointer<Float>, height: Int, width: Int, geometry g: WindowGeometry,
                               padded: UnsafeMutablePointer<Float>, paddedWidth: Int) {
        for y in 0..<height {
            (padded + (y + g.padTop) * paddedWidth + g.padLeft).update(from: plane + y * width, count: width)
        }
    }

    /// `y[oy, ox] += Σ w[ky, kx] · padded[oy·s + ky·d, ox·s + kx·d]`.
    @inline(__always)
    static func forwardPlane(padded: UnsafePointer<Float>, paddedWidth: Int, weights: UnsafePointer<Float>,
                             output: UnsafeMutablePointer<Float>, outH: Int, outW: Int, geometry g: WindowGeometry) {
        for oy in 0..<outH {
            let row = output + oy * outW
            for ky in 0..<g.kernelHeight {
                let inputRow = padded + (oy * g.strideHeight + ky * g.dilationHeight) * paddedWidth
                for kx in 0..<g.kernelWidth {
                    let weight = weights[ky * g.kernelWidth + kx]
                    let source = inputRow + kx * g.dilationWidth
                    if g.strideWidth == 1 {
                        for ox in 0..<outW { row[ox] += weight * source[ox] }
                    } else {
                        for ox in 0..<outW { row[ox] += weight * source[ox * g.strideWidth] }
                    }
                }
            }
        }
    }

    /// Adds this plane's share of `dW` (correlation of the input with `dY`) and, when `paddedGradient` is given,
    /// scatters `w · dY` onto the padded input gradient.
    @inline(__always)
    static func backwardPlane(padded: UnsafePointer<Float>, paddedGradient: UnsafeMutablePointer<Float>?, paddedWidth: Int,
                              weights: UnsafePointer<Float>, weightGradient: UnsafeMutablePointer<Float>?,
                              outputGradient: UnsafePointer<Float>, outH: Int, outW: Int, geometry g: WindowGeometry) {
        for oy in 0..<outH {
            let dyRow = outputGradient + oy * outW
            for ky in 0..<g.kernelHeight {
                let rowOffset = (oy * g.strideHeight + ky * g.dilationHeight) * paddedWidth
                for kx in 0..<g.kernelWidth {
                    let tap = ky * g.kernelWidth + kx
                    let offset = rowOffset + kx * g.dilationWidth
                    if g.strideWidth == 1 {
                        if let weightGradient {
                            weightGradient[tap] += VectorMath.dot(dyRow, padded + offset, count: outW)
                        }
                        if let paddedGradient {
                            let weight = weights[tap], target = paddedGradient + offset
                            for ox in 0..<outW { target[ox] += weight * dyRow[ox] }
                        }
                    } else {
                        if let weightGradient {
                            var acc: Float = 0
                            let source = padded + offset
                            for ox in 0..<outW { acc += dyRow[ox] * source[ox * g.strideWidth] }
                            weightGradient[tap] += acc
                        }
                        if let paddedGradient {
                            let weight = weights[tap], target = paddedGradient + offset
                            for ox in 0..<outW { target[ox * g.strideWidth] += weight * dyRow[ox] }
                        }
                    }
                }
            }
        }
    }
}
