import CKernels

/// 3×3 depthwise convolution of one channel plane (dilation 1, stride 1 or 2) with the bias and an output clamp
/// (ReLU/ReLU6) fused into the same pass, and its backward for training. The kernels are in `CKernels`
/// (`fp32_depthwise*.c`), one per `FP32InstructionSet`.
public enum DepthwiseConvolution3x3 {
    /// Floats of scratch one call needs (reuse it for every plane of the same geometry).
    public static func scratchCount(height: Int, width: Int, stride: Int, padTop: Int, padLeft: Int,
                                    outputHeight: Int, outputWidth: Int) -> Int {
        Int(qf_fp32_depthwise3x3_scratch_size(height, width, padTop, padLeft, outputHeight, outputWidth, Int32(stride)))
    }

    /// `output[oy][ox] = clamp(bias + Σ weights[ky·3+kx] · input[oy·stride+ky−padTop][ox·stride+kx−padLeft])`, zero
    /// outside the input. `output` is `outputHeight × outputWidth`, dense.
    public static func plane(input: UnsafePointer<Float>, height: Int, width: Int, stride: Int,
                             padTop: Int, padLeft: Int, outputHeight: Int, outputWidth: Int,
                             weights: UnsafePointer<Float>, bias: Float,
                             minimum: Float = -.infinity, maximum: Float = .infinity,
                             output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                             instructionSet: FP32InstructionSet = .preferred) {
        precondition(stride == 1 || stride == 2, "DepthwiseConvolution3x3: stride \(stride)")
        precondition(instructionSet.isSupported, "DepthwiseConvolution3x3: this CPU cannot run \(instructionSet)")
        let clamps = minimum > -.infinity || maximum < .infinity
        qf_fp32_depthwise3x3(instructionSet.rawValue, input, height, width, Int32(stride), padTop, padLeft,
                             outputHeight, outputWidth, weights, bias, minimum, maximum, clamps ? 1 : 0,
                             output, scratch)
    }

    /// `plane(...)` for planes `planes` of an NCHW tensor (plane index = image · channels + channel), each with its
    /// channel's 9 weights (`weights + 9·channel`) and `bias[channel]`; one C call for the whole range.
    public static func planes(_ planes: Range<Int>, channels: Int, input: UnsafePointer<Float>, height: Int, width: Int,
                              stride: Int, padTop: Int, padLeft: Int, outputHeight: Int, outputWidth: Int,
                              weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                              minimum: Float = -.infinity, maximum: Float = .infinity,
                              output: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                              instructionSet: FP32InstructionSet = .preferred) {
        precondition(stride == 1 || stride == 2, "DepthwiseConvolution3x3: stride \(stride)")
        precondition(instructionSet.isSupported, "DepthwiseConvolution3x3: this CPU cannot run \(instructionSet)")
        let clamps = minimum > -.infinity || maximum < .infinity
        qf_fp32_depthwise3x3_planes(instructionSet.rawValue, input, planes.lowerBound, planes.count, channels,
                                    height, width, Int32(stride), padTop, padLeft, outputHeight, outputWidth,
                                    weights, bias, minimum, maximum, clamps ? 1 : 0, output, scratch)
    }

    /// `planes(...)` for all `planeCount` planes of an NCHW tensor, split into contiguous ranges over `threads`
    /// workers, each with its own scratch (the training forward and the float engine both run it this way).
    public static func allPlanes(_ planeCount: Int, channels: Int, input: UnsafePointer<Float>, height: Int, width: Int,
                                 stride: Int, padTop: Int, padLeft: Int, outputHeight: Int, outputWidth: Int,
                                 weights: UnsafePointer<Float>, bias: UnsafePointer<Float>,
                                 minimum: Float = -.infinity, maximum: Float = .infinity,
                                 output: UnsafeMutablePointer<Float>, threads: Int,
                                 instructionSet: FP32InstructionSet = .preferred) {
        let scratchCount = Self.scratchCount(height: height, width: width, stride: stride, padTop: padTop, padLeft: padLeft,
                                             outputHeight: outputHeight, outputWidth: outputWidth)
        let source = Parallel.SharedPointer(input), target = Parallel.SharedMutablePointer(output)
        let sharedWeights = Parallel.SharedPointer(weights), sharedBias = Parallel.SharedPointer(bias)
        Parallel.forEachChunk(count: planeCount, threads: threads) { range in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: max(1, scratchCount)) { scratch in
                Self.planes(range, channels: channels, input: source.base, height: height, width: width, stride: stride,
                            padTop: padTop, padLeft: padLeft, outputHeight: outputHeight, outputWidth: outputWidth,
                            weights: sharedWeights.base, bias: sharedBias.base, minimum: minimum, maximum: maximum,
                            output: target.base, scratch: scratch.baseAddress!, instructionSet: instructionSet)
            }
        }
    }

    /// True when `backward` handles the geometry: stride 1 or 2, top and left padding 0...2 (the padding below and
    /// right only sets the output size).
    public static func backwardSupports(stride: Int, padTop: Int, padLeft: Int) -> Bool {
        (stride == 1 || stride == 2) && (0...2).contains(padTop) && (0...2).contains(padLeft)
    }

    /// Gradients of `allPlanes(...)` without clamp over a batch of `batch` images of `channels` planes:
    /// `weightGradient` (channels × 9) gets `Σ dY · input` over the window added; `inputGradient` gets
    /// `Σ w · dY` over the outputs each input element feeds, stored into every element (`accumulate` false: the
    /// buffer may be uninitialised) or added. Either gradient may be nil.
    ///
    /// Workers take contiguous image ranges, each with its own weight-gradient partial; the partials are added in
    /// worker order, so the result does not depend on timing.
    ///
    /// `inputAffine`: the convolution's input is `clamp(scale[c]·input + offset[c])`, computed chunk by chunk as
    /// the weight gradient reads it (a BatchNorm output that was not stored). With `gradientSums` (room for
    /// `min(threads, batch)` workers × 2 × channels doubles, zeroed) and a stored input gradient, worker w also adds
    /// that BatchNorm's backward sums over the input gradient it wrote (`BatchNormalizationKernel.gradientSums`
    /// with dy = input gradient, x = input), Σd to its first `channels` doubles and Σd·x to the next `channels`.
    ///
    /// `outputGradientAffine`: the output gradient is not `outputGradient` but the BatchNorm input gradient it
    /// describes (`qf_fp32_gradient_affine`), computed chunk by chunk as the kernel reads it.
    public static func backward(batch: Int, channels: Int, input: UnsafePointer<Float>,
                                inputAffine: (scale: UnsafePointer<Float>, offset: UnsafePointer<Float>,
                                              clamp: BatchNormalizationKernel.Clamp?,
                                              gradientSums: UnsafeMutablePointer<Double>?)? = nil,
                                outputGradient: UnsafePointer<Float>, outputGradientAffine: OutputGradientAffine? = nil,
                                weights: UnsafePointer<Float>,
                                height: Int, width: Int, stride: Int, padTop: Int, padLeft: Int,
                                outputHeight: Int, outputWidth: Int,
                                weightGradient: UnsafeMutablePointer<Float>?, inputGradient: UnsafeMutablePointer<Float>?,
                                accumulate: Bool, threads: Int, instructionSet: FP32InstructionSet = .preferred) {
        precondition(backwardSupports(stride: stride, padTop: padTop, padLeft: padLeft),
                     "DepthwiseConvolution3x3.backward: stride \(stride), padding \(padTop), \(padLeft)")
        precondition(instructionSet.isSupported, "DepthwiseConvolution3x3: this CPU cannot run \(instructionSet)")
        guard batch > 0, weightGradient != nil || inputGradient != nil else { return }
        let workers = max(1, min(threads, batch))
        let scratchCount = Int(qf_fp32_depthwise3x3_backward_scratch_size(channels, height, width, Int32(stride), padTop,
                                                                          padLeft, outputHeight, outputWidth))
        var partials = [Float](repeating: 0, count: weightGradient == nil ? 0 : workers * channels * 9)
        let affine = ChannelAffineArgument(inputAffine, workers: workers, channels: channels)
        defer { affine.release() }
        let gradientAffine = GradientAffineArgument(outputGradientAffine)
        defer { gradientAffine.release() }
        partials.withUnsafeMutableBufferPointer { partialBuffer in
            let source = Parallel.SharedPointer(input), dY = Parallel.SharedPointer(outputGradient)
            let w = Parallel.SharedPointer(weights)
            let dX = inputGradient.map { Parallel.SharedMutablePointer($0) }
            let dW = weightGradient == nil ? nil : partialBuffer.baseAddress.map { Parallel.SharedMutablePointer($0) }
            Parallel.forEach(count: workers, threads: workers) { worker in
                let images = Parallel.chunk(worker, of: workers, count: batch)
                // Scratch the C kernel writes before reading (a worker's heap buffer: it can be hundreds of KB).
                var scratch = [Float](unsafeUninitializedCapacity: scratchCount) { _, initialized in initialized = scratchCount }
                scratch.withUnsafeMutableBufferPointer { scratchBuffer in
                    qf_fp32_depthwise3x3_backward(instructionSet.rawValue, source.base, affine.pointer(worker: worker),
                                                  dY.base, gradientAffine.pointer, w.base,
                                                  images.lowerBound * channels, images.count * channels, channels,
                                                  height, width, Int32(stride), padTop, padLeft, outputHeight,
                                                  outputWidth, dW.map { $0.base + worker * channels * 9 }, dX?.base,
                                                  accumulate ? 1 : 0, scratchBuffer.baseAddress!)
                }
            }
        }
        guard let weightGradient else { return }
        for worker in 0..<workers {
            for i in 0..<(channels * 9) { weightGradient[i] += partials[worker * channels * 9 + i] }
        }
    }
}

/// The C kernel's optional `qf_fp32_channel_affine` argument, one per worker (each with its own sums), kept at a
/// fixed address that worker threads may read.
private struct ChannelAffineArgument: @unchecked Sendable {
    private let arguments: UnsafeMutablePointer<qf_fp32_channel_affine>?

    init(_ affine: (scale: UnsafePointer<Float>, offset: UnsafePointer<Float>, clamp: BatchNormalizationKernel.Clamp?,
                    gradientSums: UnsafeMutablePointer<Double>?)?, workers: Int, channels: Int) {
        guard let affine else {
            arguments = nil
            return
        }
        arguments = .allocate(capacity: workers)
        for worker in 0..<workers {
            let sums = affine.gradientSums.map { $0 + worker * 2 * channels }
            (arguments! + worker).initialize(to: qf_fp32_channel_affine(
                scale: affine.scale, offset: affine.offset, minimum: affine.clamp?.lower ?? 0,
                maximum: affine.clamp?.upper ?? 0, clamp: affine.clamp == nil ? 0 : 1,
                gradient_sum: sums, gradient_dot: sums.map { $0 + channels }))
        }
    }

    func pointer(worker: Int) -> UnsafeMutablePointer<qf_fp32_channel_affine>? { arguments.map { $0 + worker } }

    func release() { arguments?.deallocate() }
}

/// A gradient described instead of stored: BatchNorm's input gradient `gain·d + slope·x + constant` per channel, d the
/// BatchNorm output gradient (`outputGradient` of the call) through the mask of `clamp(scale·x + offset)`.
public struct OutputGradientAffine {
    public var input: UnsafePointer<Float>
    public var scale: UnsafePointer<Float>
    public var offset: UnsafePointer<Float>
    public var clamp: BatchNormalizationKernel.Clamp?
    public var gain: UnsafePointer<Float>
    public var slope: UnsafePointer<Float>
    public var constant: UnsafePointer<Float>

    public init(input: UnsafePointer<Float>, scale: UnsafePointer<Float>, offset: UnsafePointer<Float>,
                clamp: BatchNormalizationKernel.Clamp?, gain: UnsafePointer<Float>, slope: UnsafePointer<Float>,
                constant: UnsafePointer<Float>) {
        self.input = input
        self.scale = scale
        self.offset = offset
        self.clamp = clamp
        self.gain = gain
        self.slope = slope
        self.constant = constant
    }
}

/// The C kernel's optional `qf_fp32_gradient_affine` argument at a fixed address that worker threads may read.
private struct GradientAffineArgument: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<qf_fp32_gradient_affine>?

    init(_ affine: OutputGradientAffine?) {
        guard let affine else {
            pointer = nil
            return
        }
        pointer = .allocate(capacity: 1)
        pointer!.initialize(to: qf_fp32_gradient_affine(
            input: affine.input, scale: affine.scale, offset: affine.offset, minimum: affine.clamp?.lower ?? 0,
            maximum: affine.clamp?.upper ?? 0, clamp: affine.clamp == nil ? 0 : 1, gain: affine.gain,
            slope: affine.slope, constant: affine.constant))
    }

    func release() { pointer?.deallocate() }
}
