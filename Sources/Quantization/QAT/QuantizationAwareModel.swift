import Datasets
import Foundation
import Graph
import Tensor
import Training

/// Everything the QAT transform needs to know (the `qat` stage's `with:` block, minus the training recipe).
public struct QATConfiguration: Sendable, Equatable {
    public var weightBits: Int
    public var activationBits: Int
    public var scaleUpdate: ScaleUpdate
    public var estimator: StraightThroughEstimator
    /// How per-channel weight scales are chosen at every step (`max_abs` as MNN, or `mse`); with learned weight
    /// scales, how they are initialised.
    public var weightMethod: WeightCalibration
    /// Per-channel weight scales are parameters (LSQ) instead of following the weights.
    public var learnedWeightScales: Bool
    /// Keep the first and the last quantized layer (weights, input and output) at 8 bits.
    public var keepFirstAndLastAt8Bits: Bool
    /// Node names left in float.
    public var skip: [String]
    /// How the activation ranges are initialised before the first step (on calibration images).
    public var initialization: ActivationCalibration
    /// Where the model will run; it may cap the weight bits (`DeploymentTarget.weightBits`).
    public var target: DeploymentTarget

    public init(weightBits: Int = 8, activationBits: Int = 8, scaleUpdate: ScaleUpdate = .movingAverage(momentum: 0.99),
                estimator: StraightThroughEstimator = .clipped, weightMethod: WeightCalibration = .maxAbs,
                learnedWeightScales: Bool = false, keepFirstAndLastAt8Bits: Bool = false, skip: [String] = [], initialization: ActivationCalibration = .mse,
                target: DeploymentTarget = .qatflow) {
        self.target = target
        self.weightBits = weightBits
        self.activationBits = activationBits
        self.scaleUpdate = scaleUpdate
        self.estimator = estimator
        self.weightMethod = weightMethod
        self.learnedWeightScales = learnedWeightScales
        self.keepFirstAndLastAt8Bits = keepFirstAndLastAt8Bits
        self.skip = skip
        self.initialization = initialization
    }
}

/// MNN's `turnQuantize`, done as QDQ: a float model (BatchNorm kept) becomes a trainable model that computes
/// what the exported quantized graph computes.
///
/// The quantization points and quantized nodes are those PTQ would choose on the BN-folded graph (`QDQPlan`),
/// so both produce the same graph format. In the trainable model every Conv+BN pair becomes one
/// `FoldedConvBatchNorm`, other Conv and Gemm nodes get fake-quantized weights, and each observed tensor gets an
/// `ActivationFakeQuantizer` as a value transform. `exportQuantizedGraph()` folds BN with the trained statistics
/// and writes the trained activation grids and weight scales into the QDQ graph.
public final class QuantizationAwareModel {
    public let configuration: QATConfiguration
    public let model: TrainableModel
    /// One per observed quantization point, in graph order.
    public let activationQuantizers: [ActivationFakeQuantizer]
    /// The conv/Gemm layers with fake-quantized weights.
    public let weightLayers: [WeightFakeQuantizing]
    let plan: QDQPlan
    /// Bits per quantization point / per node where they differ from the configuration (first and last layer).
    let activationBitsOverride: [String: Int]
    let weightBitsOverride: [String: Int]

    /// `calibration` initialises the activation ranges (`configuration.initialization`); `batch` is its batch size.
    public init(graph: Graph, configuration: QATConfiguration, calibration: LabeledImages, batch: Int = 100,
                progress: (String, Int, Int) -> Void = { _, _, _ in }) throws {
        for bits in [configuration.weightBits, configuration.activationBits] where !(2...8).contains(bits) {
            throw QuantizationError("bits must be between 2 and 8, got \(bits)")
        }
        self.configuration = configuration
        try PostTrainingQuantizer.requireFiniteInitializers(graph)
        let folded = GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(graph))
        let knownNames = Set(folded.nodes.map(\.name))
        if let unknown = configuration.skip.first(where: { !knownNames.contains($0) }) {
            throw QuantizationError("skip: no node named '\(unknown)' in the model")
        }
        let plan = QDQPlan(graph: folded, skip: Set(configuration.skip))
        guard !plan.quantizedNodes.isEmpty else { throw QuantizationError("no quantizable node (Conv, Gemm, Add, pooling) in the model") }
        self.plan = plan
        let quantizedNodes = Set(plan.quantizedNodes)

        // First/last layer at 8 bits: their weights, their data inputs and their outputs.
        var activationBits: [String: Int] = [:], weightBits: [String: Int] = [:]
        if configuration.keepFirstAndLastAt8Bits {
            let weighted = plan.quantizedNodes.compactMap { name in folded.nodes.first { $0.name == name } }
                .filter { $0.op == .conv || $0.op == .gemm }
            var consumers: [String: [Node]] = [:]
            for node in folded.nodes { for input in node.inputs where !input.isEmpty { consumers[input, default: []].append(node) } }
            for node in [weighted.first, weighted.last].compactMap({ $0 }) {
                weightBits[node.name] = 8
                for tensor in QDQPlan.dataInputs(of: node) + [QDQPlan.quantizedOutput(of: node, consumers: consumers)] {
                    activationBits[plan.sharedGrid[tensor] ?? tensor] = 8
                }
            }
        }
        for (tensor, root) in plan.sharedGrid { if let bits = activationBits[root] { activationBits[tensor] = bits } }
        // The target's cap, resolved here once so training fake-quantizes the weights the export will write.
        for node in folded.nodes where quantizedNodes.contains(node.name) && (node.op == .conv || node.op == .gemm) {
            let requested = weightBits[node.name] ?? configuration.weightBits
            let capped = configuration.target.weightBits(requested: requested, inputActivationBits: activationBits[node.inputs[0]] ?? configuration.activationBits)
            if capped != configuration.weightBits { weightBits[node.name] = capped } else { weightBits[node.name] = nil }
        }
        activationBitsOverride = activationBits
        weightBitsOverride = weightBits

        // Initial ranges from calibration on the folded float graph.
        let observers = try PostTrainingQuantizer.observe(plan.observed, in: folded, data: calibration, batch: batch,
                                                          calibration: configuration.initialization, progress: progress)
        var quantizers: [String: ActivationFakeQuantizer] = [:]
        for name in plan.observed {
            let bits = activationBits[name] ?? configuration.activationBits
            let (low, high) = observers[name]!.range(configuration.initialization, bits: bits)
            quantizers[name] = ActivationFakeQuantizer(tensorName: name, bits: bits, update: configuration.scaleUpdate,
                                                       estimator: configuration.estimator, initialLow: low, initialHigh: high)
        }
        activationQuantizers = plan.observed.map { quantizers[$0]! }

        // Layers: which training-graph nodes become fake-quantized, and which BN folds into which conv.
        let foldedOutputs = Dictionary(uniqueKeysWithValues: folded.nodes.map { ($0.name, $0.outputs[0]) })
        var weightLayers: [WeightFakeQuantizing] = []
        let model = try TrainableModel(graph: graph, rewriteLayers: { layers, graph in
            var producer: [String: Int] = [:]
            for (index, node) in graph.nodes.enumerated() { for output in node.outputs { producer[output] = index } }
            for (index, node) in graph.nodes.enumerated() where quantizedNodes.contains(node.name) {
                func weightQuantizer(_ initialWeights: [Float], channels: Int) -> WeightFakeQuantizer {
                    WeightFakeQuantizer(nodeName: node.name, bits: weightBits[node.name] ?? configuration.weightBits,
                                        method: configuration.weightMethod, estimator: configuration.estimator,
                                        learned: configuration.learnedWeightScales, initialWeights: initialWeights, channels: channels)
                }
                if node.op == .conv, let convolution = layers[index] as? Conv2d {
                    // Folding renamed the conv's output to the BN's: that BN node is folded into this conv.
                    if let foldedOutput = foldedOutputs[node.name], foldedOutput != node.outputs[0],
                       let bnIndex = producer[foldedOutput], let batchNorm = layers[bnIndex] as? BatchNorm2d {
                        let layer = FoldedConvBatchNorm(nodeName: node.name, convolution: convolution, batchNorm: batchNorm,
                                                        makeWeightQuantizer: weightQuantizer)
                        layers[index] = layer
                        layers[bnIndex] = FoldedBatchNormSlot(batchNorm: batchNorm)
                        weightLayers.append(layer)
                    } else {
                        let weight = convolution.weight.value
                        let layer = FakeQuantizedConvolution(nodeName: node.name, convolution: convolution,
                                                             weightQuantizer: weightQuantizer(weight.data, channels: weight.shape[0]))
                        layers[index] = layer
                        weightLayers.append(layer)
                    }
                } else if node.op == .gemm, let linear = layers[index] as? Linear {
                    let weight = linear.weight.value
                    let layer = FakeQuantizedLinear(nodeName: node.name, linear: linear,
                                                    weightQuantizer: weightQuantizer(weight.data, channels: weight.shape[0]))
                    layers[index] = layer
                    weightLayers.append(layer)
                }
            }
            // A ReLU/ReLU6 whose output is fake-quantized: the quantizer's grid saturation does the clamp.
            guard configuration.estimator == .clipped, configuration.scaleUpdate != .learned else { return }
            for (index, node) in graph.nodes.enumerated() {
                guard let clamp = layers[index] as? Clamp, let quantizer = quantizers[node.outputs[0]],
                      clamp.lower == 0, clamp.upper > 0 else { continue }
                quantizer.absorb(clamp)
                layers[index] = FusedActivation(clamp: clamp)
            }
        }, valueTransforms: quantizers)
        self.model = model
        self.weightLayers = weightLayers
    }

    /// From now on BN uses its running statistics (frozen) and the convolutions run exactly folded.
    public func freezeBatchNorm() {
        for case let layer as FoldedConvBatchNorm in weightLayers { layer.isBatchNormFrozen = true }
    }

    /// From now on activation ranges stop following the data (learned scales keep learning).
    public func freezeObservers() {
        for quantizer in activationQuantizers { quantizer.isObserving = false }
    }

    /// The activation grid of every quantization point (shared grids resolved).
    public func activationGrids() -> [String: AffineQuantization] {
        var grids: [String: AffineQuantization] = [:]
        for quantizer in activationQuantizers { grids[quantizer.tensorName] = quantizer.grid }
        for (tensor, root) in plan.sharedGrid { grids[tensor] = grids[root] }
        return grids
    }

    /// The trained model as a QDQ graph (docs/quantization.md), the same format PTQ writes, with the grids and
    /// weight scales used in training; `metadata` entries join the `qatflow.quantization` record.
    public func exportQuantizedGraph(metadata: [String: Any] = [:]) throws -> Graph {
        let trained = model.exportGraph()
        let folded = GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(trained))
        var scales: [String: [Float]] = [:]
        for layer in weightLayers { scales[layer.nodeName] = layer.currentWeightScales() }
        let config = QuantizationConfig(weightBits: configuration.weightBits, activationBits: configuration.activationBits,
                                        activationCalibration: configuration.initialization, weightCalibration: configuration.weightMethod,
                                        skip: configuration.skip, target: configuration.target)
        var extras = metadata
        extras["origin"] = "qat"
        extras["scale_update"] = configuration.scaleUpdate.name
        extras["ste"] = configuration.estimator.rawValue
        extras["weight_scales"] = configuration.learnedWeightScales ? "learned" : "observed"
        var builder = QDQGraphBuilder(graph: folded, plan: plan, grids: activationGrids(), config: config)
        builder.activationBitsOverride = activationBitsOverride
        builder.weightBitsOverride = weightBitsOverride
        builder.weightScales = scales
        builder.metadataExtras = extras
        return try builder.build()
    }
}
