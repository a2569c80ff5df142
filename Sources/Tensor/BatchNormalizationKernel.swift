import CKernels

/// The memory passes of training-mode BatchNorm over an NCHW tensor, optionally with a clamp (ReLU/ReLU6) fused
/// after it: C kernels in `CKernels` (`fp32_batchnorm.c`), one per `FP32InstructionSet` like the other FP32
/// kernels. Each call covers the planes `planes` (plane p = image · channels + channel, `planeSize` floats at
/// p · planeSize of every tensor argument) on the calling thread; callers split planes over threads.
///
/// The per-channel arrays (`shift`, `scale`, `offset`, `gain`, `slope`, `constant`) have `channels` values; the
/// per-channel totals are Double and are added to, so each thread keeps its own.
public enum BatchNormalizationKernel {
    /// A clamp fused after BN, and the gradient mask it implies.
    public struct Clamp: Sendable {
        public var lower: Float
        public var upper: Float
        public init(lower: Float, upper: Float) {
            self.lower = lower
            self.upper = upper
        }
    }

    /// `sum[c] += Σ (x − shift[c])`, `squares[c] += Σ (x − shift[c])²`: BN's mean and variance from one read of x.
    public static func statistics(_ x: UnsafePointer<Float>, planes: Range<Int>, channels: Int, planeSize: Int,
                                  shift: UnsafePointer<Float>, sum: UnsafeMutablePointer<Double>,
                                  squares: UnsafeMutablePointer<Double>, instructionSet: FP32InstructionSet = .preferred) {
        precondition(instructionSet.isSupported, "BatchNormalizationKernel: this CPU cannot run \(instructionSet)")
        qf_fp32_batchnorm_statistics(instructionSet.rawValue, x, planes.lowerBound, planes.count, channels, planeSize,
                                     shift, sum, squares)
    }

    /// `y = scale[c]·x + offset[c]`, clamped when `clamp` is given.
    public static func apply(_ x: UnsafePointer<Float>, planes: Range<Int>, channels: Int, planeSize: Int,
                             scale: UnsafePointer<Float>, offset: UnsafePointer<Float>, clamp: Clamp?,
                             into y: UnsafeMutablePointer<Float>, instructionSet: FP32InstructionSet = .preferred) {
        precondition(instructionSet.isSupported, "BatchNormalizationKernel: this CPU cannot run \(instructionSet)")
        qf_fp32_batchnorm_apply(instructionSet.rawValue, x, planes.lowerBound, planes.count, channels, planeSize,
                                scale, offset, clamp?.lower ?? 0, clamp?.upper ?? 0, clamp == nil ? 0 : 1, y)
    }

    /// `sum[c] += Σ d`, `dot[c] += Σ d·x` with `d = dy`, or with a clamp `dy` where
    /// `lower < scale[c]·x + offset[c] < upper` and 0 elsewhere (the fused clamp's mask, recomputed from x).
    public static func gradientSums(outputGradient dy: UnsafePointer<Float>, input x: UnsafePointer<Float>,
                                    planes: Range<Int>, channels: Int, planeSize: Int,
                                    scale: UnsafePointer<Float>, offset: UnsafePointer<Float>, clamp: Clamp?,
                                    sum: UnsafeMutablePointer<Double>, dot: UnsafeMutablePointer<Double>,
                                    instructionSet: FP32InstructionSet = .preferred) {
        precondition(instructionSet.isSupported, "BatchNormalizationKernel: this CPU cannot run \(instructionSet)")
        qf_fp32_batchnorm_gradient_sums(instructionSet.rawValue, dy, x, planes.lowerBound, planes.count, channels,
                                        planeSize, scale, offset, clamp?.lower ?? 0, clamp?.upper ?? 0,
                                        clamp == nil ? 0 : 1, sum, dot)
    }

    /// `dx (+)= gain[c]·d + slope[c]·x + constant[c]` with `d` as in `gradientSums`; stored (the buffer may be
    /// uninitialised) unless `accumulate`.
    public static func inputGradient(outputGradient dy: UnsafePointer<Float>, input x: UnsafePointer<Float>,
                                     planes: Range<Int>, channels: Int, planeSize: Int,
                                     scale: UnsafePointer<Float>, offset: UnsafePointer<Float>, clamp: Clamp?,
                                     gain: UnsafePointer<Float>, slope: UnsafePointer<Float>, constant: UnsafePointer<Float>,
                                     accumulate: Bool, into dx: UnsafeMutablePointer<Float>,
                                     instructionSet: FP32InstructionSet = .preferred) {
        precondition(instructionSet.isSupported, "BatchNormalizationKernel: this CPU cannot run \(instructionSet)")
        qf_fp32_batchnorm_input_gradient(instructionSet.rawValue, dy, x, planes.lowerBound, planes.count, channels,
                                         planeSize, scale, offset, clamp?.lower ?? 0, clamp?.upper ?? 0,
                                         clamp == nil ? 0 : 1, gain, slope, constant, accumulate ? 1 : 0, dx)
    }
}
