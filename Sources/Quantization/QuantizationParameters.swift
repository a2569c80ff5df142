import Foundation

/// The integer grid of one quantized tensor (or one channel): real value = scale · (q − zeroPoint).
public struct AffineQuantization: Sendable, Equatable, Codable {
    public var scale: Float
    public var zeroPoint: Int
    public var qmin: Int
    public var qmax: Int

    public init(scale: Float, zeroPoint: Int, qmin: Int, qmax: Int) {
        self.scale = scale
        self.zeroPoint = zeroPoint
        self.qmin = qmin
        self.qmax = qmax
    }

    /// Asymmetric activation grid over `[low, high]` with `bits` bits stored in uint8: `[0, 2^bits − 1]`.
    /// The range is widened to contain 0 so that zero (padding, ReLU's floor) is exact.
    public static func activation(low: Float, high: Float, bits: Int) -> AffineQuantization {
        let qmax = (1 << bits) - 1
        let low = min(low, 0), high = max(high, 0)
        let span = high - low
        guard span > 0, span.isFinite else { return AffineQuantization(scale: 1, zeroPoint: 0, qmin: 0, qmax: qmax) }
        let scale = span / Float(qmax)
        let zeroPoint = min(max(Int((-low / scale).rounded(.toNearestOrEven)), 0), qmax)
        return AffineQuantization(scale: scale, zeroPoint: zeroPoint, qmin: 0, qmax: qmax)
    }

    /// Symmetric weight grid, narrow range `[−(2^(b−1) − 1), 2^(b−1) − 1]`, zero point 0.
    public static func weight(maxAbs: Float, bits: Int) -> AffineQuantization {
        let qmax = (1 << (bits - 1)) - 1
        let scale = maxAbs > 0 && maxAbs.isFinite ? maxAbs / Float(qmax) : 1
        return AffineQuantization(scale: scale, zeroPoint: 0, qmin: -qmax, qmax: qmax)
    }

    @inline(__always) public func quantize(_ x: Float) -> Int {
        let q = (x / scale).rounded(.toNearestOrEven)
        guard q.isFinite else { return zeroPoint }
        return min(max(Int(q) + zeroPoint, qmin), qmax)
    }

    @inline(__always) public func dequantize(_ q: Int) -> Float { Float(q - zeroPoint) * scale }

    /// What the tensor looks like after quantize → dequantize.
    @inline(__always) public func fakeQuantize(_ x: Float) -> Float { dequantize(quantize(x)) }

    /// The real interval the grid covers.
    public var representableRange: ClosedRange<Float> { dequantize(qmin)...dequantize(qmax) }
}

/// How activation ranges are chosen from calibration data.
public enum ActivationCalibration: Sendable, Equatable {
    /// Smallest and largest value seen.
    case max
    /// Per batch min/max, averaged with `momentum` (MNN's MovingAverage: 0.99·old + 0.01·new).
    case movingAverage(momentum: Double)
    /// Threshold minimising the KL divergence between the 2048-bin histogram and its quantized version.
    case kl
    /// Clip to the given percentile at both ends (e.g. 99.99).
    case percentile(Double)
    /// Range minimising the mean squared quantization error over the histogram.
    case mse

    public var name: String {
        switch self {
        case .max: return "max"
        case .movingAverage: return "moving_average"
        case .kl: return "kl"
        case .percentile: return "percentile"
        case .mse: return "mse"
        }
    }
}

/// How per-channel weight scales are chosen.
public enum WeightCalibration: String, Sendable, Equatable {
    /// scale = max|W| / qmax.
    case maxAbs = "max_abs"
    /// The clipping of max|W| that minimises the channel's squared quantization error.
    case mse
}

/// Everything post-training quantization needs to know.
public struct QuantizationConfig: Sendable, Equatable {
    public var weightBits: Int
    public var activationBits: Int
    public var activationCalibration: ActivationCalibration
    public var weightCalibration: WeightCalibration
    /// Node names left in float.
    public var skip: [String]
    /// Empirical bias correction (Nagel et al. 2019, §4.2): each quantized Conv/Gemm's bias absorbs the mean error
    /// its quantized output makes on calibration images (docs/quantization.md).
    public var biasCorrection: Bool
    /// Images bias correction measures on: a seeded subset of the calibration images (all of them when fewer).
    public var biasCorrectionImages: Int
    /// Training images run through the fake-quantized network in training mode to re-estimate BatchNorm
    /// statistics before BN is folded (0: off). Needs a model that still has its BatchNormalization nodes.
    public var batchNormReestimationImages: Int
    /// Chooses the bias-correction subset and the BN re-estimation images.
    public var seed: UInt64
    /// Where the model will run; it may cap the weight bits (`DeploymentTarget.weightBits`).
    public var target: DeploymentTarget

    public init(weightBits: Int = 8, activationBits: Int = 8, activationCalibration: ActivationCalibration = .mse,
                weightCalibration: WeightCalibration = .maxAbs, skip: [String] = [], biasCorrection: Bool = false,
                biasCorrectionImages: Int = 256, batchNormReestimationImages: Int = 0, seed: UInt64 = 0,
                target: DeploymentTarget = .qatflow) {
        self.target = target
        self.weightBits = weightBits
        self.activationBits = activationBits
        self.activationCalibration = activationCalibration
        self.weightCalibration = weightCalibration
        self.skip = skip
        self.biasCorrection = biasCorrection
        self.biasCorrectionImages = biasCorrectionImages
        self.batchNormReestimationImages = batchNormReestimationImages
        self.seed = seed
    }
}
