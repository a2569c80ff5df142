import Foundation
import Tensor

/// Running statistics of a BatchNorm layer, updated by training-mode forward passes.
public struct BatchNormalizationStatistics: Sendable, Equatable {
    public var mean: [Float]
    public var variance: [Float]

    public init(mean: [Float], variance: [Float]) {
        precondition(mean.count == variance.count, "BN statistics: \(mean.count) means, \(variance.count) variances")
        self.mean = mean
        self.variance = variance
    }
}

/// BatchNorm over NCHW (per channel). Training mode normalises with the batch statistics and moves the running
/// statistics towards them (`running = (1 − momentum)·running + momentum·batch`, PyTorch's convention, with the
/// unbiased batch variance as PyTorch does); evaluation mode uses the running statistics.
///
/// The passes over the tensor (statistics, apply, and backward's sums and input gradient) are the C kernels of
/// `BatchNormalizationKernel`, on plane ranges split over the threads.
enum BatchNormalization {
    /// With `fusedClamp`, returns `clamp(BN(x))` in one pass and backpropagates through both (the clamp's mask is
    /// recomputed from `x`, so the BN output is never stored).
    ///
    /// With `inputAffine` (a, b per channel), normalises `a[c]·x + b[c]` instead of `x`, without materialising it:
    /// QAT's BN-folded convolution feeds BatchNorm its output divided by the fold factor, and that division would
    /// otherwise be a whole extra pass over the tensor, forward and backward. BatchNorm's output does not depend
    /// on b in training mode (it subtracts the batch mean), so b reaches only the running mean, and its gradient
    /// is zero.
    static func forward(_ x: Variable, scale: Variable, shift: Variable, statistics: inout BatchNormalizationStatistics,
                        momentum: Float, epsilon: Float, fusedClamp: (lower: Float, upper: Float)? = nil,
                        inputAffine: (scale: [Float], shift: [Float])? = nil, deferOutput: Bool = false,
                        deferInputGradient: Bool = false, context: ForwardContext) -> Variable {
        let (batch, channels) = (x.shape[0], x.shape[1])
        let plane = x.shape.dropFirst(2).reduce(1, *)
        let elements = batch * plane
        let inputScale = inputAffine?.scale ?? [Float](repeating: 1, count: channels)
        let inputShift = inputAffine?.shift ?? [Float](repeating: 0, count: channels)
        // Per channel, the normalised input as an affine function of x: x̂ = x·normScale + normShift.
        var normScale = [Float](repeating: 0, count: channels)
        var normShift = [Float](repeating: 0, count: channels)
        if context.isTraining {
            var center = [Float](repeating: 0, count: channels)
            var batchVariance = [Float](repeating: 0, count: channels)
            x.value.data.withUnsafeBufferPointer { input in
                let source = Parallel.SharedPointer(input.baseAddress!)
                // One read of x for both statistics (x is tens of MB at batch 128; BN is bandwidth bound): sums of
                // d = x − s and d² around a shift s per channel, its first value, which lies within the channel's
                // spread, so var = E[d²] − E[d]² keeps its precision (a shift of 0 would not for |mean| ≫ σ).
                let shifts = (0..<channels).map { input[$0 * plane] }
                let totals = shifts.withUnsafeBufferPointer { shiftBuffer in
                    let shift = Parallel.SharedPointer(shiftBuffer.baseAddress!)
                    return ChannelSums.reduce(batch: batch, channels: channels, threads: context.threads) { planes, sum, squares in
                        BatchNormalizationKernel.statistics(source.base, planes: planes, channels: channels, planeSize: plane,
                                                            shift: shift.base, sum: sum, squares: squares)
                    }
                }
                for c in 0..<channels {
                    let meanOffset = totals.first[c] / Double(elements)
                    center[c] = Float(Double(shifts[c]) + meanOffset)
                    batchVariance[c] = Float(max(0, totals.second[c] / Double(elements) - meanOffset * meanOffset))
                }
            }
            let unbiasing = elements > 1 ? Float(elements) / Float(elements - 1) : 1
            for c in 0..<channels {
                // Statistics of a·x + b: mean a·μ + b, variance a²·σ².
                let a = inputScale[c], variance = a * a * batchVariance[c]
                normScale[c] = a / (variance + epsilon).squareRoot()
                normShift[c] = -center[c] * normScale[c]
                statistics.mean[c] = (1 - momentum) * statistics.mean[c] + momentum * (a * center[c] + inputShift[c])
                statistics.variance[c] = (1 - momentum) * statistics.variance[c] + momentum * variance * unbiasing
            }
        } else {
            for c in 0..<channels {
                let inverseDeviation = 1 / (statistics.variance[c] + epsilon).squareRoot()
                normScale[c] = inputScale[c] * inverseDeviation
                normShift[c] = (inputShift[c] - statistics.mean[c]) * inverseDeviation
            }
        }
        // y = x·multiplier + offset per channel.
        let gamma = scale.value.data, beta = shift.value.data
        var multiplier = [Float](repeating: 0, count: channels), offset = [Float](repeating: 0, count: channels)
        for c in 0..<channels {
            multiplier[c] = gamma[c] * normScale[c]
            offset[c] = gamma[c] * normShift[c] + beta[c]
        }
        let kernelClamp = fusedClamp.map { BatchNormalizationKernel.Clamp(lower: $0.lower, upper: $0.upper) }
        let affine = DeferredChannelAffine(source: x, scale: multiplier, offset: offset, clamp: kernelClamp, threads: context.threads)
        let needsGradient = context.needsGradient(x, scale, shift)
        let result = deferOutput ? Variable(deferred: affine, requiresGradient: needsGradient)
                                 : Variable(affine.materialize(), requiresGradient: needsGradient)
        guard result.requiresGradient else { return result }
        let usedBatchStatistics = context.isTraining
        let precomputed = deferOutput ? affine : nil
        context.record(result) { [threads = context.threads, normScale, normShift, multiplier, offset, kernelClamp] in
            // Per channel: Σdy and Σdy·x̂ (through the fused clamp's mask when there is one).
            var sumGradient = [Float](repeating: 0, count: channels), sumGradientNormalized = [Float](repeating: 0, count: channels)
            x.value.data.withUnsafeBufferPointer { input in
                result.gradient.withUnsafeBufferPointer { outputGradient in
                    let source = Parallel.SharedPointer(input.baseAddress!), dY = Parallel.SharedPointer(outputGradient.baseAddress!)
                    // The deferred output's reader may have taken these sums already, while the gradient it wrote
                    // was in cache (same kernel, same order).
                    let sums = precomputed?.gradientSums ?? multiplier.withUnsafeBufferPointer { multiplierBuffer in
                        offset.withUnsafeBufferPointer { offsetBuffer in
                            let a = Parallel.SharedPointer(multiplierBuffer.baseAddress!), b = Parallel.SharedPointer(offsetBuffer.baseAddress!)
                            return ChannelSums.reduce(batch: batch, channels: channels, threads: threads) { planes, sum, dot in
                                BatchNormalizationKernel.gradientSums(outputGradient: dY.base, input: source.base, planes: planes,
                                                                      channels: channels, planeSize: plane, scale: a.base,
                                                                      offset: b.base, clamp: kernelClamp, sum: sum, dot: dot)
                            }
                        }
                    }
                    for c in 0..<channels {
                        sumGradient[c] = Float(sums.first[c])
                        // Σ dy·x̂ = normScale·Σ dy·x + normShift·Σ dy
                        sumGradientNormalized[c] = Float(Double(normScale[c]) * sums.second[c] + Double(normShift[c]) * sums.first[c])
                    }
                }
            }
            if scale.requiresGradient {
                scale.accumulateGradient { for c in 0..<channels { $0[c] += sumGradientNormalized[c] } }
            }
            if shift.requiresGradient {
                shift.accumulateGradient { for c in 0..<channels { $0[c] += sumGradient[c] } }
            }
            guard x.requiresGradient else { return }
            // dx = m·dy + k1·x + k0 per channel, with m = γ·normScale and, in training mode (the batch statistics
            // depend on x): dx = m·(dy − Σdy/M − x̂·Σdyx̂/M), so k1 = −m·normScale·Σdyx̂/M,
            // k0 = −m·Σdy/M − m·normShift·Σdyx̂/M.
            let count = Float(elements)
            var k1 = [Float](repeating: 0, count: channels), k0 = [Float](repeating: 0, count: channels)
            if usedBatchStatistics {
                for c in 0..<channels {
                    let projection = sumGradientNormalized[c] / count
                    k1[c] = -multiplier[c] * normScale[c] * projection
                    k0[c] = -multiplier[c] * sumGradient[c] / count - multiplier[c] * normShift[c] * projection
                }
            }
            if deferInputGradient && !x.hasGradient {
                // x's producer, a convolution read by this BatchNorm alone, computes it image by image as it reads it.
                x.deferGradient(DeferredInputGradient(outputGradient: result.gradient, input: x,
                                                      perChannel: multiplier + offset + k1 + k0, clamp: kernelClamp,
                                                      threads: threads))
                return
            }
            x.writeGradient { inputGradient, fresh in
                x.value.data.withUnsafeBufferPointer { input in
                    result.gradient.withUnsafeBufferPointer { outputGradient in
                        let source = Parallel.SharedPointer(input.baseAddress!), dY = Parallel.SharedPointer(outputGradient.baseAddress!)
                        let dX = Parallel.SharedMutablePointer(inputGradient)
                        // dx = m·d + k1·x + k0, with d the (masked) dy.
                        let perChannel = multiplier + offset + k1 + k0
                        perChannel.withUnsafeBufferPointer { buffer in
                            let values = Parallel.SharedPointer(buffer.baseAddress!)
                            Parallel.forEachChunk(count: batch * channels, threads: threads) { planes in
                                let m = values.base, b = values.base + channels
                                BatchNormalizationKernel.inputGradient(
                                    outputGradient: dY.base, input: source.base, planes: planes, channels: channels,
                                    planeSize: plane, scale: m, offset: b, clamp: kernelClamp, gain: m,
                                    slope: values.base + 2 * channels, constant: values.base + 3 * channels,
                                    accumulate: !fresh, into: dX.base)
                            }
                        }
                    }
                }
            }
        }
        return result
    }
}

/// Computes images of a tensor that was described rather than stored (`DeferredChannelAffine`,
/// `DeferredInputGradient`) into a caller's buffer.
protocol ImageWriting: Sendable {
    /// Floats per image.
    var imageSize: Int { get }
    /// Images `images` (contiguous) into `target`, which has room for them all.
    func writeImages(_ images: Range<Int>, into target: UnsafeMutablePointer<Float>)
}

extension ImageWriting {
    /// All `batch` images, the threads taking contiguous image ranges.
    func allImages(batch: Int, threads: Int) -> [Float] {
        let count = batch * imageSize
        var all = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        all.withUnsafeMutableBufferPointer { buffer in
            let target = Parallel.SharedMutablePointer(buffer.baseAddress!)
            Parallel.forEachChunk(count: batch, threads: threads) { images in
                writeImages(images, into: target.base + images.lowerBound * imageSize)
            }
        }
        return all
    }
}

/// BatchNorm's input gradient, `dx = m[c]·d + k1[c]·x + k0[c]` with d the output gradient through the fused clamp's
/// mask (`BatchNormalizationKernel.inputGradient`), left for the convolution that computed x — its only reader is this
/// BatchNorm — to compute image by image into a buffer that stays in cache while its backward reads it. That saves
/// writing the gradient to memory and reading it back. Same values as the stored gradient (same kernel).
final class DeferredInputGradient {
    let outputGradient: [Float]
    /// BatchNorm's input x (its storage, not the `Variable`: that one holds this object).
    let input: [Float]
    let shape: [Int]
    /// m, clamp offset, k1, k0: four runs of `channels` values.
    let perChannel: [Float]
    let clamp: BatchNormalizationKernel.Clamp?
    let threads: Int

    init(outputGradient: [Float], input: Variable, perChannel: [Float], clamp: BatchNormalizationKernel.Clamp?, threads: Int) {
        self.outputGradient = outputGradient
        self.input = input.value.data
        self.shape = input.shape
        self.perChannel = perChannel
        self.clamp = clamp
        self.threads = threads
    }

    /// The whole gradient, computed in one pass over the threads.
    func materialize() -> [Float] {
        withImageWriter { $0.allImages(batch: shape[0], threads: threads) }
    }

    func withImageWriter<Result>(_ body: (ImageWriter) -> Result) -> Result {
        let channels = shape[1], planeSize = shape.dropFirst(2).reduce(1, *)
        return outputGradient.withUnsafeBufferPointer { dy in
            input.withUnsafeBufferPointer { x in
                perChannel.withUnsafeBufferPointer { values in
                    body(ImageWriter(outputGradient: dy.baseAddress!, input: x.baseAddress!, perChannel: values.baseAddress!,
                                     clamp: clamp, channels: channels, planeSize: planeSize))
                }
            }
        }
    }

    /// The depthwise backward kernel's form of this gradient: BatchNorm's output gradient and the description.
    func withKernelArguments<Result>(_ body: (UnsafePointer<Float>, OutputGradientAffine) -> Result) -> Result {
        withImageWriter { writer in
            let channels = writer.channels, values = writer.perChannel
            return body(writer.outputGradient, OutputGradientAffine(
                input: writer.input, scale: values, offset: values + channels, clamp: writer.clamp, gain: values,
                slope: values + 2 * channels, constant: values + 3 * channels))
        }
    }

    /// Pointers valid inside `withImageWriter` only.
    struct ImageWriter: ImageWriting, @unchecked Sendable {
        let outputGradient: UnsafePointer<Float>
        let input: UnsafePointer<Float>
        let perChannel: UnsafePointer<Float>
        let clamp: BatchNormalizationKernel.Clamp?
        let channels: Int
        let planeSize: Int

        var imageSize: Int { channels * planeSize }

        /// The gradient of images `images` (contiguous) into `target` (`images.count · imageSize` floats).
        func writeImages(_ images: Range<Int>, into target: UnsafeMutablePointer<Float>) {
            // The kernel finds plane p at p·planeSize and its channel as p mod channels: start at an image.
            let start = images.lowerBound * imageSize
            BatchNormalizationKernel.inputGradient(
                outputGradient: outputGradient + start, input: input + start, planes: 0..<(images.count * channels),
                channels: channels, planeSize: planeSize, scale: perChannel, offset: perChannel + channels, clamp: clamp,
                gain: perChannel, slope: perChannel + 2 * channels, constant: perChannel + 3 * channels,
                accumulate: false, into: target)
        }
    }
}

extension Variable {
    /// Runs `body` with this value as the depthwise backward kernel takes it: stored (no description), or deferred
    /// (`DeferredChannelAffine`: the BatchNorm input and the description).
    func withKernelInput<Result>(_ body: (UnsafePointer<Float>, DeferredChannelAffine.ImageWriter?) -> Result) -> Result {
        if let deferred = pendingAffine { return deferred.withImageWriter { body($0.source, $0) } }
        return value.data.withUnsafeBufferPointer { body($0.baseAddress!, nil) }
    }

    /// Runs `body` with this value's gradient as the depthwise backward kernel takes it: stored (no description), or
    /// deferred (`DeferredInputGradient`).
    func withOutputGradient<Result>(_ body: (UnsafePointer<Float>, OutputGradientAffine?) -> Result) -> Result {
        if let pending = pendingGradient { return pending.withKernelArguments { body($0, $1) } }
        return gradient.withUnsafeBufferPointer { body($0.baseAddress!, nil) }
    }
}

/// `clamp(scale[c]·x + offset[c])` over the channels of an NCHW tensor `source`: BatchNorm's output, either
/// computed in one pass (`materialize`) or left for its only reader, a convolution, to compute image by image
/// into a buffer that stays in cache while that convolution reads it (`withImageWriter`). Then the output is never
/// written to memory and read back: at batch 128 that is two passes over tens of MB per BatchNorm. The values are
/// the same either way (the same kernel computes them), and the convolution's backward recomputes them the same way.
final class DeferredChannelAffine {
    let source: Variable
    let scale: [Float]
    let offset: [Float]
    let clamp: BatchNormalizationKernel.Clamp?
    let threads: Int

    init(source: Variable, scale: [Float], offset: [Float], clamp: BatchNormalizationKernel.Clamp?, threads: Int) {
        self.source = source
        self.scale = scale
        self.offset = offset
        self.clamp = clamp
        self.threads = threads
    }

    /// BatchNorm's backward sums (Σd, Σd·x per channel over the output gradient, through the clamp's mask), when the
    /// reader computed them while writing that gradient (`ChannelSums` order: per worker, then in worker order).
    var gradientSums: (first: [Double], second: [Double])?

    var shape: [Int] { source.shape }

    /// The whole tensor, computed in one pass over the threads.
    func materialize() -> Tensor {
        Tensor(shape: shape, data: withImageWriter { $0.allImages(batch: shape[0], threads: threads) })
    }

    /// Runs `body` with a writer that computes any images of the tensor into a caller's buffer (from any thread).
    func withImageWriter<Result>(_ body: (ImageWriter) -> Result) -> Result {
        source.value.data.withUnsafeBufferPointer { input in
            scale.withUnsafeBufferPointer { scaleBuffer in
                offset.withUnsafeBufferPointer { offsetBuffer in
                    body(ImageWriter(source: input.baseAddress!, scale: scaleBuffer.baseAddress!, offset: offsetBuffer.baseAddress!,
                                     clamp: clamp, channels: shape[1], planeSize: shape.dropFirst(2).reduce(1, *)))
                }
            }
        }
    }

    /// Pointers valid inside `withImageWriter` only.
    struct ImageWriter: ImageWriting, @unchecked Sendable {
        let source: UnsafePointer<Float>
        let scale: UnsafePointer<Float>
        let offset: UnsafePointer<Float>
        let clamp: BatchNormalizationKernel.Clamp?
        let channels: Int
        let planeSize: Int

        var imageSize: Int { channels * planeSize }

        /// Images `images` (contiguous) into `target` (`images.count · channels · planeSize` floats).
        func writeImages(_ images: Range<Int>, into target: UnsafeMutablePointer<Float>) {
            // The kernel finds plane p at p·planeSize and its channel as p mod channels: start at an image.
            BatchNormalizationKernel.apply(source + images.lowerBound * channels * planeSize, planes: 0..<(images.count * channels),
                                           channels: channels, planeSize: planeSize, scale: scale, offset: offset,
                                           clamp: clamp, into: target)
        }
    }
}

/// Per-channel sums over an NCHW tensor, visiting planes in memory order (image by image) so the reads stream;
/// each worker owns a contiguous range of images (`body` gets its planes and the worker's own two per-channel
/// Double totals to add to), and the workers' totals are added in worker order afterwards (deterministic).
enum ChannelSums {
    static func reduce(batch: Int, channels: Int, threads: Int,
                       _ body: @Sendable (_ planes: Range<Int>, _ first: UnsafeMutablePointer<Double>,
                                          _ second: UnsafeMutablePointer<Double>) -> Void) -> (first: [Double], second: [Double]) {
        let workers = max(1, min(threads, batch))
        var partial = [Double](repeating: 0, count: workers * 2 * channels)
        partial.withUnsafeMutableBufferPointer { buffer in
            let target = Parallel.SharedMutablePointer(buffer.baseAddress!)
            Parallel.forEach(count: workers, threads: workers) { worker in
                let sums = target.base + worker * 2 * channels
                let images = Parallel.chunk(worker, of: workers, count: batch)
                body(images.lowerBound * channels..<images.upperBound * channels, sums, sums + channels)
            }
        }
        return combine(partial, workers: workers, channels: channels)
    }

    /// Adds per-worker totals (worker w's two arrays at w·2·channels) in worker order.
    static func combine(_ partial: [Double], workers: Int, channels: Int) -> (first: [Double], second: [Double]) {
        var first = [Double](repeating: 0, count: channels), second = [Double](repeating: 0, count: channels)
        for worker in 0..<workers {
            for c in 0..<channels {
                first[c] += partial[worker * 2 * channels + c]
                second[c] += partial[worker * 2 * channels + channels + c]
            }
        }
        return (first, second)
    }
}
