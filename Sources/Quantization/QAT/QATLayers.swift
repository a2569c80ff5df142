import Graph
import Tensor
import Training

/// How an activation quantizer's range follows the data during QAT.
public enum ScaleUpdate: Sendable, Equatable {
    /// The range only widens: min of the minima, max of the maxima (MNN's "Maximum", without its sign bug).
    case maximum
    /// `range ← momentum·range + (1 − momentum)·batch range` (MNN's "MovingAverage" uses 0.99).
    case movingAverage(momentum: Float)
    /// LSQ: scale and zero point are parameters trained by gradient descent.
    case learned

    public var name: String {
        switch self {
        case .maximum: return "maximum"
        case .movingAverage: return "moving_average"
        case .learned: return "learned"
        }
    }
}

/// Fake-quantizes one activation tensor with a per-tensor asymmetric grid. Installed by `QuantizationAwareModel`
/// as a value transform, so every reader of the tensor sees the quantized value, as in the exported QDQ graph.
public final class ActivationFakeQuantizer: Layer {
    public let tensorName: String
    public let bits: Int
    public let update: ScaleUpdate
    public let estimator: StraightThroughEstimator
    /// The observed range (`maximum`, `movingAverage`); the grid is derived from it as PTQ derives it.
    public private(set) var low: Float, high: Float
    /// False once observers are frozen: the range stays as it is.
    public var isObserving = true
    /// The ReLU/ReLU6 that produces this tensor, when QAT let this quantizer apply it (`absorb(_:)`): the grid's
    /// saturation then does the clamp, saving a pass forward and backward.
    public private(set) var absorbedClamp: Clamp?
    /// `learned` only: the grid's scale and zero point (one value each).
    let learnedScale: Parameter?, learnedZeroPoint: Parameter?

    public init(tensorName: String, bits: Int, update: ScaleUpdate, estimator: StraightThroughEstimator,
                initialLow: Float, initialHigh: Float) {
        self.tensorName = tensorName
        self.bits = bits
        self.update = update
        self.estimator = estimator
        low = initialLow
        high = initialHigh
        if update == .learned {
            let grid = AffineQuantization.activation(low: initialLow, high: initialHigh, bits: bits)
            learnedScale = Parameter(name: tensorName + "::qat.scale", role: .quantizationRange, value: Tensor(shape: [1], data: [grid.scale]))
            learnedZeroPoint = Parameter(name: tensorName + "::qat.zero_point", role: .quantizationRange,
                                         value: Tensor(shape: [1], data: [Float(grid.zeroPoint)]))
        } else {
            learnedScale = nil
            learnedZeroPoint = nil
        }
    }

    public var parameters: [Parameter] { [learnedScale, learnedZeroPoint].compactMap { $0 } }

    /// The grid this quantizer applies now (and that export writes).
    public var grid: AffineQuantization {
        if let learnedScale, let learnedZeroPoint {
            return FakeQuantizeOperations.learnedGrid(scale: learnedScale.value.data[0], zeroPoint: learnedZeroPoint.value.data[0], bits: bits)
        }
        return AffineQuantization.activation(low: low, high: high, bits: bits)
    }

    /// Takes over `clamp` (the node producing this tensor then passes its input through). Only for observed
    /// ranges with the clipped estimator: there the grid's saturation at `[dequantize(qmin), dequantize(qmax)]`
    /// inside `[lower, upper]` *is* the clamp, forward (values) and backward (zero gradient outside).
    func absorb(_ clamp: Clamp) {
        precondition(update != .learned && estimator == .clipped, "only observed ranges with the clipped estimator absorb a clamp")
        absorbedClamp = clamp
        low = max(low, clamp.lower)
        high = min(high, clamp.upper)
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        var x = inputs[0]
        if let clamp = absorbedClamp {
            // The grid implies the clamp unless a range left [lower, upper] (it cannot while observing clamped data).
            let span = grid.representableRange
            if span.lowerBound < clamp.lower || span.upperBound > clamp.upper * (1 + 1e-6) {
                x = Functional.clamp(x, lower: clamp.lower, upper: clamp.upper, context: context)
            }
        }
        if let learnedScale, let learnedZeroPoint {
            // LSQ's gradient scale 1/√(N·Qp), N = features per image.
            let features = max(1, x.value.count / max(1, x.shape.first ?? 1))
            let gradientScale = 1 / (Float(features) * Float((1 << bits) - 1)).squareRoot()
            return FakeQuantizeOperations.learnedActivation(x, scale: learnedScale.variable, zeroPoint: learnedZeroPoint.variable,
                                                            bits: bits, gradientScale: gradientScale, context: context)
        }
        if context.isTraining && isObserving {
            var batch = FakeQuantizeOperations.minMax(x.value, threads: context.threads)
            if let clamp = absorbedClamp {  // the range of the clamped values
                batch = (min(max(batch.low, clamp.lower), clamp.upper), max(min(batch.high, clamp.upper), clamp.lower))
            }
            switch update {
            case .maximum:
                low = min(low, batch.low)
                high = max(high, batch.high)
            case .movingAverage(let momentum):
                low = momentum * low + (1 - momentum) * batch.low
                high = momentum * high + (1 - momentum) * batch.high
            case .learned:
                break
            }
        }
        return FakeQuantizeOperations.activation(x, grid: grid, estimator: estimator, context: context)
    }

    /// Not a graph node: export writes its grid through `QuantizationAwareModel.exportQuantizedGraph()`.
    public func export(into graph: inout Graph, node: inout Node) {}
}

/// Fake-quantizes one layer's weight per output channel (after the BN fold, when there is one). The scales are
/// either chosen from the current weights at every step by `method`, or learned (LSQ) starting from what
/// `method` chooses for the weights QAT starts from.
final class WeightFakeQuantizer {
    let bits: Int
    let method: WeightCalibration
    let estimator: StraightThroughEstimator
    /// One step size per output channel when learned; nil when the scales follow the weights.
    let learnedScales: Parameter?

    init(nodeName: String, bits: Int, method: WeightCalibration, estimator: StraightThroughEstimator, learned: Bool,
         initialWeights: [Float], channels: Int) {
        self.bits = bits
        self.method = method
        self.estimator = estimator
        if learned {
            let scales = WeightQuantizer.grids(initialWeights, channels: channels, channelsLast: false, bits: bits, method: method).map(\.scale)
            learnedScales = Parameter(name: nodeName + "::qat.weight_scale", role: .quantizationRange,
                                      value: Tensor(shape: [channels], data: scales))
        } else {
            learnedScales = nil
        }
    }

    var parameters: [Parameter] { learnedScales.map { [$0] } ?? [] }

    /// The grids `weight · multiplier` (already multiplied: `folded`) gets now.
    func grids(_ folded: [Float], channels: Int) -> [AffineQuantization] {
        if let learnedScales { return FakeQuantizeOperations.learnedWeightGrids(learnedScales.value.data, bits: bits) }
        return WeightQuantizer.grids(folded, channels: channels, channelsLast: false, bits: bits, method: method)
    }

    /// `weight · multiplier[c]` on the grids, differentiable.
    func callAsFunction(_ weight: Variable, multiplier: [Float]?, channels: Int, context: ForwardContext) -> Variable {
        if let learnedScales {
            return FakeQuantizeOperations.learnedWeight(weight, multiplier: multiplier, scales: learnedScales.variable, bits: bits,
                                                        estimator: estimator, context: context)
        }
        let folded = FakeQuantizeOperations.foldedValues(weight.value.data, multiplier: multiplier, channels: channels)
        return FakeQuantizeOperations.weight(weight, multiplier: multiplier, grids: grids(folded, channels: channels),
                                             estimator: estimator, context: context)
    }
}

/// A layer whose weights are fake-quantized per output channel; export needs the scales it trained with.
public protocol WeightFakeQuantizing: AnyObject {
    /// The graph node this layer computes.
    var nodeName: String { get }
    var weightBits: Int { get }
    /// The per-channel scales of the weights as they are now (folded with BN where BN is folded in).
    func currentWeightScales() -> [Float]
}

/// A Conv followed by a BatchNorm, trained as one BN-folded convolution (Krishnamoorthi 2018, as PyTorch's
/// `ConvBn2d`): the weight that gets the grid is `W·γ/σ` with σ from the running variance, exactly the weight
/// `GraphTransforms.foldBatchNormalization` exports.
///
/// - Training with BN live: `y = conv(x, fq(W·γ/σ)) · σ/γ`, then BatchNorm with batch statistics (which also
///   moves the running statistics): the batch-statistics correction.
/// - BN frozen, or evaluation: `y = conv(x, fq(W·γ/σ)) + β + (b − μ)·γ/σ`, the deployed folded convolution.
///
/// The fold factor γ/σ is treated as a constant in the weight path (γ still learns through BatchNorm while it
/// is live, and β always does); PyTorch differentiates through it too, a second-order effect at QAT's step counts.
public final class FoldedConvBatchNorm: Layer, WeightFakeQuantizing {
    public let nodeName: String
    public let convolution: Conv2d
    public let batchNorm: BatchNorm2d
    let weightQuantizer: WeightFakeQuantizer
    public var weightBits: Int { weightQuantizer.bits }
    /// True after `freeze_bn_after` steps: running statistics stop moving and BN is applied folded.
    public var isBatchNormFrozen = false

    /// `makeWeightQuantizer` gets the folded weights `W·γ/σ` the layer starts with and their channel count.
    init(nodeName: String, convolution: Conv2d, batchNorm: BatchNorm2d,
         makeWeightQuantizer: (_ foldedWeights: [Float], _ channels: Int) -> WeightFakeQuantizer) {
        self.nodeName = nodeName
        self.convolution = convolution
        self.batchNorm = batchNorm
        let factors = Self.foldFactors(of: batchNorm)
        self.weightQuantizer = makeWeightQuantizer(
            FakeQuantizeOperations.foldedValues(convolution.weight.value.data, multiplier: factors, channels: factors.count), factors.count)
    }

    public var parameters: [Parameter] { convolution.parameters + batchNorm.parameters + weightQuantizer.parameters }

    /// γ/σ per output channel, computed as `foldBatchNormalization` computes it.
    func foldFactors() -> [Float] { Self.foldFactors(of: batchNorm) }

    static func foldFactors(of batchNorm: BatchNorm2d) -> [Float] {
        let gamma = batchNorm.scale.value.data, variance = batchNorm.statistics.variance
        return (0..<gamma.count).map { gamma[$0] / (variance[$0] + batchNorm.epsilon).squareRoot() }
    }

    public func currentWeightScales() -> [Float] {
        let factors = foldFactors()
        let folded = FakeQuantizeOperations.foldedValues(convolution.weight.value.data, multiplier: factors, channels: factors.count)
        return weightQuantizer.grids(folded, channels: factors.count).map(\.scale)
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        let factors = foldFactors(), channels = factors.count
        let weight = weightQuantizer(convolution.weight.variable, multiplier: factors, channels: channels, context: context)
        let bias = convolution.bias
        if context.isTraining && !isBatchNormFrozen {
            let y = Functional.conv2d(inputs[0], weight: weight, bias: nil, geometry: convolution.geometry, groups: convolution.groups,
                                      context: context)
            // BatchNorm of the unfolded output y·σ/γ + b, the division folded into BatchNorm's own pass. The bias
            // cancels against the batch mean (its gradient is zero, as in the unfused form); it only moves the
            // running mean.
            let unfold = factors.map { $0 != 0 ? 1 / $0 : 0 }
            return Functional.batchNorm(y, scale: batchNorm.scale.variable, shift: batchNorm.shift.variable,
                                        statistics: &batchNorm.statistics, momentum: batchNorm.momentum, epsilon: batchNorm.epsilon,
                                        inputAffine: (unfold, bias?.value.data ?? [Float](repeating: 0, count: channels)),
                                        context: context)
        }
        // The deployed folded convolution; its bias is what foldBatchNormalization computes: (b − μ)·factor + β.
        let mean = batchNorm.statistics.mean, beta = batchNorm.shift.value.data
        let biasValues = bias?.value.data ?? [Float](repeating: 0, count: channels)
        let shift = (0..<channels).map { (biasValues[$0] - mean[$0]) * factors[$0] + beta[$0] }
        var sources: [(variable: Variable, coefficient: [Float])] = [(batchNorm.shift.variable, [Float](repeating: 1, count: channels))]
        if let bias { sources.append((bias.variable, factors)) }
        let foldedBias = FakeQuantizeOperations.channelCombination(shift, sources: sources, context: context)
        return Functional.conv2d(inputs[0], weight: weight, bias: foldedBias, geometry: convolution.geometry, groups: convolution.groups,
                                 context: context)
    }

    /// Writes the (unfolded) convolution weights; the BatchNorm's node exports γ, β and the statistics.
    public func export(into graph: inout Graph, node: inout Node) {
        convolution.export(into: &graph, node: &node)
    }
}

/// Stands at the BatchNorm node whose work `FoldedConvBatchNorm` does: passes its input through and exports
/// the BatchNorm's parameters and statistics, so `exportGraph()` still writes a complete float model.
public final class FoldedBatchNormSlot: Layer, BatchNormOwner {
    public let batchNorm: BatchNorm2d

    init(batchNorm: BatchNorm2d) { self.batchNorm = batchNorm }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable { inputs[0] }

    public func export(into graph: inout Graph, node: inout Node) {
        batchNorm.export(into: &graph, node: &node)
    }
}

/// A convolution without BatchNorm after it, with fake-quantized weights.
public final class FakeQuantizedConvolution: Layer, WeightFakeQuantizing {
    public let nodeName: String
    public let convolution: Conv2d
    let weightQuantizer: WeightFakeQuantizer
    public var weightBits: Int { weightQuantizer.bits }

    init(nodeName: String, convolution: Conv2d, weightQuantizer: WeightFakeQuantizer) {
        self.nodeName = nodeName
        self.convolution = convolution
        self.weightQuantizer = weightQuantizer
    }

    public var parameters: [Parameter] { convolution.parameters + weightQuantizer.parameters }

    public func currentWeightScales() -> [Float] {
        weightQuantizer.grids(convolution.weight.value.data, channels: convolution.weight.value.shape[0]).map(\.scale)
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        let weight = weightQuantizer(convolution.weight.variable, multiplier: nil, channels: convolution.weight.value.shape[0],
                                     context: context)
        return Functional.conv2d(inputs[0], weight: weight, bias: convolution.bias?.variable, geometry: convolution.geometry,
                                 groups: convolution.groups, context: context)
    }

    public func export(into graph: inout Graph, node: inout Node) {
        convolution.export(into: &graph, node: &node)
    }
}

/// A fully connected layer (Gemm) with fake-quantized weights, per output feature.
public final class FakeQuantizedLinear: Layer, WeightFakeQuantizing {
    public let nodeName: String
    public let linear: Linear
    let weightQuantizer: WeightFakeQuantizer
    public var weightBits: Int { weightQuantizer.bits }

    init(nodeName: String, linear: Linear, weightQuantizer: WeightFakeQuantizer) {
        self.nodeName = nodeName
        self.linear = linear
        self.weightQuantizer = weightQuantizer
    }

    public var parameters: [Parameter] { linear.parameters + weightQuantizer.parameters }

    public func currentWeightScales() -> [Float] {
        weightQuantizer.grids(linear.weight.value.data, channels: linear.weight.value.shape[0]).map(\.scale)
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        let weight = weightQuantizer(linear.weight.variable, multiplier: nil, channels: linear.weight.value.shape[0], context: context)
        return Functional.linear(inputs[0], weight: weight, bias: linear.bias?.variable, alpha: linear.alpha, beta: linear.beta,
                                 context: context)
    }

    public func export(into graph: inout Graph, node: inout Node) {
        linear.export(into: &graph, node: &node)
    }
}
