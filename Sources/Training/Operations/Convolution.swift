import Tensor

/// 2-D convolution (NCHW input, OIHW weights, groups, stride, padding, dilation) with its gradients.
///
/// Forward and backward both run im2col + the packed `GEMM`, one image per worker; depthwise convolutions (one
/// input channel per group, one output per group) use the direct kernels in `DepthwiseConvolution` instead.
/// Backward: `dW_g += dY_g · colsᵀ`, `dCols = W_gᵀ · dY_g` folded back with col2im, `dB = Σ dY`.
enum Convolution {
    static func isDepthwise(weightShape: [Int], inputChannels: Int, groups: Int) -> Bool {
        weightShape[1] == 1 && groups == inputChannels && weightShape[0] == inputChannels && groups > 1
    }

    static func forward(_ x: Variable, weight: Variable, bias: Variable?, geometry: WindowGeometry, groups: Int,
                        context: ForwardContext) -> Variable {
        let (batch, channels, height, width) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let outputChannels = weight.shape[0]
        precondition(channels == weight.shape[1] * groups, "convolution: \(channels) input channels, weights \(weight.shape), groups \(groups)")
        if isDepthwise(weightShape: weight.shape, inputChannels: channels, groups: groups) {
            return DepthwiseConvolution.forward(x, weight: weight, bias: bias, geometry: geometry, context: context)
        }
        let outH = geometry.outputHeight(inputHeight: height), outW = geometry.outputWidth(inputWidth: width)
        let plane = outH * outW
        let rows = outputChannels / groups
        let depth = weight.shape[1] * geometry.kernelHeight * geometry.kernelWidth
        let channelsPerGroup = weight.shape[1]
        let groupInput = channelsPerGroup * height * width
        let imageInput = channels * height * width, imageOutput = outputChannels * plane
        let packed = packRows(weight.value.data, groups: groups, rows: rows, depth: depth, transposed: false)
        var output = [Float](unsafeUninitializedCapacity: batch * imageOutput) { buffer, initialized in
            // With a bias the GEMM accumulates onto it; without one it overwrites, so nothing is filled.
            if let biasValues = bias?.value.data {
                for n in 0..<batch {
                    for o in 0..<outputChannels {
                        (buffer.baseAddress! + n * imageOutput + o * plane).initialize(repeating: biasValues[o], count: plane)
                    }
                }
            }
            initialized = batch * imageOutput
        }
        let pointwise = geometry.isPointwise
        let accumulateOntoBias = bias != nil
        let workers = min(context.threads, batch)
        let innerThreads = workers == 1 ? context.threads : 1
        ImageSource.value(of: x) { images in
            output.withUnsafeMutableBufferPointer { out in
                let target = Parallel.SharedMutablePointer(out.baseAddress!)
                Parallel.forEachChunk(count: batch, threads: workers) { range in
                    let imageScratch = images.isDeferred ? imageInput : 0
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: (pointwise ? 1 : depth * plane) + imageScratch) { buffer in
                        let columns = buffer.baseAddress!, imageBuffer = buffer.baseAddress! + (pointwise ? 1 : depth * plane)
                        for n in range {
                            let source = images.images(n..<(n + 1), buffer: imageBuffer)
                            for g in 0..<groups {
                                let image = source + g * groupInput
                                var matrix = image
                                if !pointwise {
                                    Im2col.unfold(input: image, channels: channelsPerGroup, height: height, width: width,
                                                  geometry: geometry, output: columns)
                                    matrix = UnsafePointer(columns)
                                }
                                // A 1×1 convolution reads the batch's activations (tens of MB) once, from memory,
                                // unless a deferred input was just computed into the (cached) image buffer.
                                GEMM.multiply(packedA: packed[g], n: plane, b: matrix, ldb: plane,
                                              c: target.base + n * imageOutput + g * rows * plane, ldc: plane,
                                              accumulate: accumulateOntoBias, threads: innerThreads,
                                              streamB: pointwise && !images.isDeferred)
                            }
                        }
                    }
                }
            }
        }
        let result = Variable(Tensor(shape: [batch, outputChannels, outH, outW], data: output),
                              requiresGradient: context.needsGradient(x, weight, bias))
        guard result.requiresGradient else { return result }
        context.record(result) { [threads = context.threads] in
            if let bias, bias.requiresGradient {
                reduceBias(result.gradient, batch: batch, channels: outputChannels, plane: plane, into: bias)
            }
            let needInput = x.requiresGradient, needWeight = weight.requiresGradient
            guard needInput || needWeight else { return }
            let transposedWeights = needInput
                ? packRows(weight.value.data, groups: groups, rows: rows, depth: depth, transposed: true) : []
            let workers = min(threads, batch)
            let innerThreads = workers == 1 ? threads : 1
            let weightCount = weight.value.count
            let directWeightGradient = pointwise && GEMM.hasFastTransposedProducts
            // Images per direct weight-gradient block: the kernel keeps 4 rows of dY over the block in L1 (≤ 16 KiB)
            // while the block's X streams from L2 (≤ 256 KiB); long blocks amortise its final reductions.
            let imageBlock = max(1, min(1024 / plane, 65_536 / max(1, channelsPerGroup * plane)))
            // One private weight-gradient buffer per worker, summed in worker order afterwards (deterministic).
            var partialWeights = [Float](repeating: 0, count: needWeight ? workers * weightCount : 0)
            // A deferred input (the output of a BatchNorm that only this convolution reads): when this backward
            // stores the whole input gradient (`fresh`), it also takes that BatchNorm's backward sums over each image of
            // it right after writing it, while it is in cache, with ChannelSums' worker split and order.
            let deferredInput = x.pendingAffine
            // `overwrite`: the input gradient is fresh and the pointwise GEMM stores into it instead of adding.
            func backwardPass(_ inputGradientBase: UnsafeMutablePointer<Float>?, overwrite: Bool, fresh: Bool) {
                let takeSums = fresh && deferredInput != nil && inputGradientBase != nil
                var partialSums = [Double](repeating: 0, count: takeSums ? workers * 2 * channels : 0)
                defer { if takeSums { deferredInput!.gradientSums = ChannelSums.combine(partialSums, workers: workers, channels: channels) } }
                // The input is read for the weight gradient (and, deferred, for the sums) only.
                ImageSource.value(of: needWeight || takeSums ? x : nil) { inputImages in
                    ImageSource.gradient(of: result) { gradientImages in
                        partialWeights.withUnsafeMutableBufferPointer { partial in
                            partialSums.withUnsafeMutableBufferPointer { sumsBuffer in
                                let sums = takeSums ? Parallel.SharedMutablePointer(sumsBuffer.baseAddress!) : nil
                                let dX = inputGradientBase.map { Parallel.SharedMutablePointer($0) }
                                let dW = needWeight ? Parallel.SharedMutablePointer(partial.baseAddress!) : nil
                                Parallel.forEach(count: workers, threads: workers) { worker in
                                    let images = Parallel.chunk(worker, of: workers, count: batch)
                                    let scratch = pointwise ? 1 : depth * plane
                                    // A deferred input is computed a block of images at a time (the direct weight
                                    // gradient's block, or one image).
                                    let blockImages = directWeightGradient ? imageBlock : 1
                                    let imageScratch = inputImages.isDeferred ? blockImages * imageInput : 0
                                    // A deferred output gradient likewise, the same blocks.
                                    let gradientScratch = gradientImages.isDeferred ? blockImages * imageOutput : 0
                                    withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * scratch + imageScratch + gradientScratch) { buffers in
                                        let columns = buffers.baseAddress!, columnGradient = buffers.baseAddress! + scratch
                                        let imageBuffer = buffers.baseAddress! + 2 * scratch
                                        let gradientBuffer = imageBuffer + imageScratch
                                        // The output gradient of the current block of images (`blockImages` long).
                                        var blockGradient = UnsafePointer(gradientBuffer), blockStart = images.lowerBound
                                        for n in images {
                                            if (n - images.lowerBound) % blockImages == 0 {
                                                blockStart = n
                                                blockGradient = gradientImages.images(n..<min(n + blockImages, images.upperBound),
                                                                                      buffer: gradientBuffer)
                                            }
                                            let imageGradient = blockGradient + (n - blockStart) * imageOutput
                                            // 1×1 on AVX-512: dW over a block of images at once, straight from the NCHW
                                            // planes (no per-image packing and transposing of dY and X).
                                            if let dW, directWeightGradient, (n - images.lowerBound) % imageBlock == 0 {
                                                let count = min(imageBlock, images.upperBound - n)
                                                let block = inputImages.images(n..<(n + count), buffer: imageBuffer)
                                                for g in 0..<groups {
                                                    GEMM.accumulateTransposedProducts(
                                                        m: rows, n: channelsPerGroup, k: plane, segments: count,
                                                        a: imageGradient + g * rows * plane, lda: plane, aStride: imageOutput,
                                                        b: block + g * groupInput, ldb: plane, bStride: imageInput,
                                                        c: dW.base + worker * weightCount + g * rows * depth, ldc: depth)
                                                }
                                            }
                                            let source = dW != nil && !directWeightGradient ? inputImages.images(n..<(n + 1), buffer: imageBuffer) : nil
                                            for g in 0..<groups {
                                                let gradientOut = imageGradient + g * rows * plane
                                                if let dW, let source {
                                                    let image = source + g * groupInput
                                                    var matrix = image
                                                    if !pointwise {
                                                        Im2col.unfold(input: image, channels: channelsPerGroup, height: height, width: width,
                                                                      geometry: geometry, output: columns)
                                                        matrix = UnsafePointer(columns)
                                                    }
                                                    GEMM.multiply(m: rows, n: depth, k: plane, a: gradientOut, lda: plane,
                                                                  b: matrix, ldb: plane, transposeB: true,
                                                                  c: dW.base + worker * weightCount + g * rows * depth, ldc: depth,
                                                                  accumulate: true, threads: innerThreads)
                                                }
                                                if let dX {
                                                    let gradientIn = dX.base + n * imageInput + g * groupInput
                                                    if pointwise {
                                                        GEMM.multiply(packedA: transposedWeights[g], n: plane, b: gradientOut, ldb: plane,
                                                                      c: gradientIn, ldc: plane, accumulate: !overwrite, threads: innerThreads,
                                                                      streamB: true)
                                                    } else {
                                                        GEMM.multiply(packedA: transposedWeights[g], n: plane, b: gradientOut, ldb: plane,
                                                                      c: columnGradient, ldc: plane, accumulate: false, threads: innerThreads)
                                                        Col2im.foldAdding(columns: columnGradient, channels: channelsPerGroup,
                                                                          height: height, width: width, geometry: geometry, into: gradientIn)
                                                    }
                                                }
                                            }
                                            if let sums, let dX {
                                                let target = sums.base + worker * 2 * channels
                                                inputImages.addAffineGradientSums(gradient: dX.base, image: n, sum: target,
                                                                                  dot: target + channels)
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
                x.writeGradient { gradient, fresh in
                    // col2im adds overlapping windows, so a fresh buffer starts from zero on that path.
                    if fresh && !pointwise { gradient.initialize(repeating: 0, count: x.elementCount) }
                    backwardPass(gradient, overwrite: fresh && pointwise, fresh: fresh)
                }
            } else {
                backwardPass(nil, overwrite: false, fresh: false)
            }
            if needWeight {
                weight.accumulateGradient { gradient in
                    for worker in 0..<workers {
                        let base = worker * weightCount
                        for i in 0..<weightCount { gradient[i] += partialWeights[base + i] }
                    }
                }
            }
        }
        return result
    }

    /// One packed GEMM left operand per group: `W_g` (rows × depth) or, `transposed`, `W_gᵀ` (depth × rows).
    static func packRows(_ weights: [Float], groups: Int, rows: Int, depth: Int, transposed: Bool) -> [PackedMatrixA] {
        weights.withUnsafeBufferPointer { buffer in
            (0..<groups).map { g in
                let base = buffer.baseAddress! + g * rows * depth
                return transposed
                    ? PackedMatrixA(rows: depth, depth: rows, a: base, lda: depth, transposed: true)
                    : PackedMatrixA(rows: rows, depth: depth, a: base, lda: depth)
            }
        }
    }

    /// `dB[o] += Σ_{n,p} dY[n, o, p]`.
    static func reduceBias(_ outputGradient: [Float], batch: Int, channels: Int, plane: Int, into bias: Variable) {
        bias.accumulateGradient { gradient in
            outputGradient.withUnsafeBufferPointer { dY in
                for o in 0..<channels {
                    var total: Float = 0
                    for n in 0..<batch { total += VectorMath.sum(dY.baseAddress! + (n * channels + o) * plane, count: plane) }
                    gradient[o] += total
                }
            }
        }
    }
}


/// Where a convolution reads the images of its input, or of its output gradient: the tensor's own memory or, when
/// it was deferred (`DeferredChannelAffine`, `DeferredInputGradient`), a caller's buffer that the images are
/// computed into just before they are read.
struct ImageSource: @unchecked Sendable {
    private let memory: UnsafePointer<Float>?
    private let writer: (any ImageWriting)?
    /// The deferred BatchNorm output, when this is one (for `addAffineGradientSums`).
    private let affine: DeferredChannelAffine.ImageWriter?
    private let imageSize: Int

    var isDeferred: Bool { writer != nil }

    /// Runs `body` with the images of `x`'s value (nil: no images are read; `images` must not be called).
    static func value<Result>(of x: Variable?, _ body: (ImageSource) -> Result) -> Result {
        guard let x else { return body(ImageSource(memory: nil, writer: nil, affine: nil, imageSize: 0)) }
        let imageSize = x.shape.dropFirst().reduce(1, *)
        if let deferred = x.pendingAffine {
            return deferred.withImageWriter { body(ImageSource(memory: nil, writer: $0, affine: $0, imageSize: imageSize)) }
        }
        return x.value.data.withUnsafeBufferPointer {
            body(ImageSource(memory: $0.baseAddress!, writer: nil, affine: nil, imageSize: imageSize))
        }
    }

    /// Runs `body` with the images of `result`'s gradient.
    static func gradient<Result>(of result: Variable, _ body: (ImageSource) -> Result) -> Result {
        let imageSize = result.shape.dropFirst().reduce(1, *)
        if let pending = result.pendingGradient {
            return pending.withImageWriter { body(ImageSource(memory: nil, writer: $0, affine: nil, imageSize: imageSize)) }
        }
        return result.gradient.withUnsafeBufferPointer {
            body(ImageSource(memory: $0.baseAddress!, writer: nil, affine: nil, imageSize: imageSize))
        }
    }

    /// A deferred BatchNorm output only: that BatchNorm's backward sums (`BatchNormalizationKernel.gradientSums`)
    /// over image `image` of `gradient` (the gradient of this value, the whole tensor's), added to `sum` and `dot`.
    func addAffineGradientSums(gradient: UnsafePointer<Float>, image: Int, sum: UnsafeMutablePointer<Double>,
                               dot: UnsafeMutablePointer<Double>) {
        let writer = affine!
        BatchNormalizationKernel.gradientSums(outputGradient: gradient, input: writer.source,
                                              planes: image * writer.channels..<(image + 1) * writer.channels,
                                              channels: writer.channels, planeSize: writer.planeSize, scale: writer.scale,
                                              offset: writer.offset, clamp: writer.clamp, sum: sum, dot: dot)
    }

    /// The first of the contiguous images `range`: in the tensor, or computed into `buffer` (room for them all
    /// when deferred).
    func images(_ range: Range<Int>, buffer: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        if let writer {
            writer.writeImages(range, into: buffer)
            return UnsafePointer(buffer)
        }
        return memory! + range.lowerBound * imageSize
    }
}

/// The adjoint of `Im2col.unfold`: adds each column-matrix entry back onto the image pixel it was read from.
enum Col2im {
    static func foldAdding(columns: UnsafePointer<Float>, channels: Int, height: Int, width: Int,
                           geometry g: WindowGeometry, into image: UnsafeMutablePointer<Float>) {
        let outH = g.outputHeight(inputHeight: height), outW = g.outputWidth(inputWidth: width)
        var row = columns
        for c in 0..<channels {
            let plane = image + c * height * width
            for ky in 0..<g.kernelHeight {
                for kx in 0..<g.kernelWidth {
                    let offsetY = ky * g.dilationHeight - g.padTop, offsetX = kx * g.dilationWidth - g.padLeft
                    for oy in 0..<outH {
                        let y = oy * g.strideHeight + offsetY
                        guard y >= 0 && y < height else { continue }
                        let source = row + oy * outW, destination = plane + y * width
                        if g.strideWidth == 1 {
                            let first = max(0, -offsetX), last = min(outW, width - offsetX)
                            if last > first {
                                for ox in first..<last { destination[ox + offsetX] += source[ox] }
                            }
                        } else {
                            for ox in 0..<outW {
                                let xx = ox * g.strideWidth + offsetX
                                if xx >= 0 && xx < width { destination[xx] += source[ox] }
                            }
                        }
                    }
                    row += outH * outW
                }
            }
        }
    }
}
