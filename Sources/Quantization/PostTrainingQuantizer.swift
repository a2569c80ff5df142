import Foundation
import Datasets
import Graph
import Inference
import Tensor

/// One row of the per-layer report (MNN's debug mode, done in the run record).
public struct LayerQuantizationReport: Sendable, Codable {
    public let tensor: String
    public let scale: Float
    public let zeroPoint: Int
    public let low: Float
    public let high: Float
    /// Fraction of calibration values outside the grid.
    public let clippingRatio: Double
    /// Signal-to-quantization-noise ratio of this tensor in the quantized model vs the float model, dB.
    public var sqnr: Double
    /// Cosine similarity of the same pair.
    public var cosine: Double
}

public struct QuantizationResult: Sendable {
    public let graph: Graph
    public let layers: [LayerQuantizationReport]
    public let quantizedNodes: Int
    public let floatNodes: [String]
    /// Per corrected Conv/Gemm, in graph order (empty without bias correction).
    public var biasCorrection: [BiasCorrectionReport] = []
    /// Images bias correction measured on (0: off).
    public var biasCorrectionImages = 0
    /// nil without BN re-estimation.
    public var batchNormReestimation: BatchNormReestimationSummary?
}

/// Post-training quantization: float graph + calibration images → QDQ graph (docs/quantization.md).
/// Optional steps after calibration: BN re-estimation on training images (needs a BN-kept model), then bias
/// correction on a subset of the calibration images.
public struct PostTrainingQuantizer {
    public let config: QuantizationConfig

    public init(config: QuantizationConfig) { self.config = config }

    /// `training`: where BN re-estimation draws `config.batchNormReestimationImages` images from (required when
    /// that is > 0).
    public func quantize(_ floatGraph: Graph, calibration data: LabeledImages, batch: Int, training: (any ImageDataset)? = nil,
                         progress: (String, Int, Int) -> Void = { _, _, _ in }) throws -> QuantizationResult {
        for bits in [config.weightBits, config.activationBits] where !(2...8).contains(bits) {
            throw QuantizationError("bits must be between 2 and 8, got \(bits)")
        }
        guard config.batchNormReestimationImages >= 0 else {
            throw QuantizationError("BN re-estimation images must be ≥ 0, got \(config.batchNormReestimationImages)")
        }
        guard !config.biasCorrection || config.biasCorrectionImages >= 1 else {
            throw QuantizationError("bias correction images must be ≥ 1, got \(config.biasCorrectionImages)")
        }
        try Self.requireFiniteInitializers(floatGraph)
        let graph = GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(floatGraph))
        let knownNames = Set(graph.nodes.map(\.name))
        if let unknown = config.skip.first(where: { !knownNames.contains($0) }) {
            throw QuantizationError("skip: no node named '\(unknown)' in the model")
        }
        let plan = QDQPlan(graph: graph, skip: Set(config.skip))
        guard !plan.quantizedNodes.isEmpty else { throw QuantizationError("no quantizable node (Conv, Gemm, Add, pooling) in the model") }

        let observed = plan.observed
        let observers = try Self.observe(observed, in: graph, data: data, batch: batch,
                                         calibration: config.activationCalibration, progress: progress)
        var grids: [String: AffineQuantization] = [:]
        var ranges: [String: (low: Float, high: Float)] = [:]
        for name in observed {
            let (low, high) = observers[name]!.range(config.activationCalibration, bits: config.activationBits)
            ranges[name] = (low, high)
            grids[name] = AffineQuantization.activation(low: low, high: high, bits: config.activationBits)
        }
        for (tensor, root) in plan.sharedGrid { grids[tensor] = grids[root] }

        // The float graph whose weights and biases the QDQ graph gets: the model itself, or after BN
        // re-estimation the model with the statistics of the quantized network folded in.
        var source = graph
        var summary: BatchNormReestimationSummary?
        var extras: [String: Any] = [:]
        if config.batchNormReestimationImages > 0 {
            guard let training else { throw QuantizationError("BN re-estimation needs training images") }
            let images = try CalibrationSubset.take(config.batchNormReestimationImages, from: training, seed: config.seed)
            let reestimated = try BatchNormReestimation.run(graph: floatGraph, config: config, calibration: data, images: images,
                                                            batch: batch, progress: progress)
            // The grids the statistics were measured under (calibrated the same way; QAT clamps a fused
            // ReLU/ReLU6 output's range to the clamp, which can move a grid by a rounding).
            source = GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(reestimated.graph))
            grids = reestimated.grids
            summary = reestimated.summary
            extras["bn_reestimation_images"] = images.count
        }
        let weighted = plan.quantizedNodes.filter { name in graph.nodes.contains { $0.name == name && ($0.op == .conv || $0.op == .gemm) } }
        if config.biasCorrection { source = try BiasCorrection.withExplicitBiases(source, layers: weighted) }
        let correctionImages = config.biasCorrection
            ? try CalibrationSubset.take(min(config.biasCorrectionImages, data.count), from: data, seed: config.seed) : nil
        if let correctionImages { extras["bias_correction_images"] = correctionImages.count }

        var builder = QDQGraphBuilder(graph: source, plan: plan, grids: grids, config: config)
        builder.metadataExtras = extras
        var quantizedGraph = try builder.build()
        var corrections: [BiasCorrectionReport] = []
        if let correctionImages {
            corrections = try BiasCorrection(reference: graph, layers: weighted)
                .apply(to: &quantizedGraph, images: correctionImages, batch: batch, progress: progress)
        }

        var reports: [String: LayerQuantizationReport] = [:]
        for name in observed {
            let grid = grids[name]!
            reports[name] = LayerQuantizationReport(tensor: name, scale: grid.scale, zeroPoint: grid.zeroPoint, low: ranges[name]!.low,
                                                    high: ranges[name]!.high, clippingRatio: observers[name]!.clippingRatio(grid),
                                                    sqnr: .nan, cosine: .nan)
        }
        // Fidelity against the model as given (not the re-estimated one).
        try measureFidelity(float: graph, quantized: quantizedGraph, tensors: observed, data: data, batch: batch, reports: &reports)
        let floatNodes = graph.nodes.filter { QDQPlan.quantizableOps.contains($0.op) && !plan.quantizedNodes.contains($0.name) }.map(\.name)
        var result = QuantizationResult(graph: quantizedGraph, layers: observed.compactMap { reports[$0] },
                                        quantizedNodes: plan.quantizedNodes.count, floatNodes: floatNodes)
        result.biasCorrection = corrections
        result.biasCorrectionImages = correctionImages?.count ?? 0
        result.batchNormReestimation = summary
        return result
    }

    /// A model whose weights hold NaN or infinity (a diverged training run) would poison calibration with NaN
    /// activations; it is refused up front, naming the node and the initializer.
    static func requireFiniteInitializers(_ graph: Graph) throws {
        for node in graph.nodes {
            for input in node.inputs {
                guard let initializer = graph.initializers[input], case .float32(let values) = initializer.storage else { continue }
                if let index = values.firstIndex(where: { !$0.isFinite }) {
                    throw QuantizationError("node '\(node.name)': initializer '\(input)' holds \(values[index]) at element \(index); a model with NaN or infinite parameters cannot be quantized (did training diverge?)")
                }
            }
        }
    }

    /// Calibration: runs the float graph with every tensor in `tensors` exposed as an output, twice (ranges,
    /// then histograms over those ranges), and returns one observer per tensor.
    static func observe(_ tensors: [String], in graph: Graph, data: LabeledImages, batch: Int, calibration: ActivationCalibration,
                        progress: (String, Int, Int) -> Void) throws -> [String: ActivationObserver] {
        guard let input = graph.inputs.first else { throw QuantizationError("the model has no input") }
        let probe = try FloatExecutor(graph: exposing(tensors, in: graph))
        var observers = Dictionary(uniqueKeysWithValues: tensors.map { ($0, ActivationObserver()) })
        let momentum: Double
        if case .movingAverage(let value) = calibration { momentum = value } else { momentum = 0.99 }
        for pass in 0..<2 {
            try forEachBatch(of: data, batch: batch) { tensor, done in
                let outputs = try probe.run([input.name: tensor])
                for name in tensors {
                    guard let values = outputs[name] else { continue }
                    values.data.withUnsafeBufferPointer { buffer in
                        if pass == 0 { observers[name]!.observeRange(buffer, momentum: momentum) } else { observers[name]!.observeHistogram(buffer) }
                    }
                }
                progress(pass == 0 ? "calibrate ranges" : "calibrate histograms", done, data.count)
            }
        }
        return observers
    }

    /// SQNR and cosine of each quantization point, on the first calibration batch.
    private func measureFidelity(float: Graph, quantized: Graph, tensors: [String], data: LabeledImages, batch: Int,
                                 reports: inout [String: LayerQuantizationReport]) throws {
        guard let input = float.inputs.first, data.count > 0 else { return }
        let count = min(batch, data.count)
        let sample = Tensor(shape: [count, data.channels, data.height, data.width], data: data.batch(0..<count).pixels)
        let reference = try FloatExecutor(graph: Self.exposing(tensors, in: float)).run([input.name: sample])
        let simulated = try FloatExecutor(graph: Self.exposing(tensors, in: quantized)).run([input.name: sample])
        for name in tensors {
            guard let x = reference[name]?.data, let y = simulated[name]?.data, x.count == y.count else { continue }
            var signal = 0.0, noise = 0.0, dot = 0.0, yy = 0.0
            for i in x.indices {
                let a = Double(x[i]), b = Double(y[i])
                signal += a * a; noise += (a - b) * (a - b); dot += a * b; yy += b * b
            }
            reports[name]?.sqnr = noise > 0 ? 10 * log10(signal / noise) : .infinity
            reports[name]?.cosine = signal > 0 && yy > 0 ? dot / (signal.squareRoot() * yy.squareRoot()) : 1
        }
    }

    private static func forEachBatch(of data: LabeledImages, batch: Int, _ body: (Tensor, Int) throws -> Void) throws {
        var pixels: [Float] = [], labels: [Int] = []
        for start in stride(from: 0, to: data.count, by: batch) {
            let range = start..<min(start + batch, data.count)
            data.copyBatch(range, pixels: &pixels, labels: &labels)
            try body(Tensor(shape: [range.count, data.channels, data.height, data.width], data: pixels), range.upperBound)
        }
    }

    /// The same graph with extra outputs, so the float executor hands back intermediate tensors.
    static func exposing(_ names: [String], in graph: Graph) throws -> Graph {
        var exposed = graph
        let existing = Set(graph.outputs.map(\.name))
        let shapes = try graph.validated().valueInfo
        for name in names where !existing.contains(name) {
            exposed.outputs.append(shapes[name] ?? ValueInfo(name: name, shape: []))
        }
        return exposed
    }
}

public struct QuantizationError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
