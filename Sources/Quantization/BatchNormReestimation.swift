import Datasets
import Foundation
import Graph
import Tensor
import Training

/// How much BN re-estimation moved the BatchNorm statistics.
public struct BatchNormReestimationSummary: Sendable {
    public let images: Int
    /// BatchNorm layers re-estimated.
    public let layers: Int
    /// Mean over every BN channel of |new mean − old mean| / old σ.
    public let meanShift: Double
    /// Mean over every BN channel of new σ / old σ.
    public let deviationRatio: Double
}

/// BatchNorm re-estimation for post-training quantization.
///
/// Quantization changes the statistics of every BatchNorm's input, while the running mean and variance still
/// describe the float network; folding them into the convolutions then normalises with the wrong numbers. MNN's
/// 8-bit "QAT" beat float for that reason alone (its lr-0 run scored the same, ../shared/PEERS.md). Here the
/// BN-kept model becomes QAT's fake-quantized model (`QuantizationAwareModel`: same plan, calibrated grids,
/// weights fake-quantized with BN folded in, `FoldedConvBatchNorm` normalising with batch statistics in training
/// mode), its activation ranges are frozen, and the images run through it in training mode without a tape and
/// without an optimizer step, so the only state that changes is the BN running statistics. Each BN's momentum is
/// set per batch so the running statistics become the image-weighted average over all batches (PyTorch's
/// `momentum=None`): the old float statistics keep no weight.
enum BatchNormReestimation {
    struct Result {
        /// The float model as given, BatchNorm kept, with the re-estimated running statistics (nothing else differs).
        let graph: Graph
        /// The activation grids the re-estimation ran with (the calibrated ones, frozen), shared grids resolved.
        let grids: [String: AffineQuantization]
        let summary: BatchNormReestimationSummary
    }

    static func run(graph: Graph, config: QuantizationConfig, calibration: LabeledImages, images: LabeledImages, batch: Int,
                    progress: (String, Int, Int) -> Void) throws -> Result {
        guard graph.nodes.contains(where: { $0.op == .batchNormalization }) else {
            throw QuantizationError("BN re-estimation needs a model that still has its BatchNormalization nodes, and this model has none (BN already folded): convert it with for_training: true (qatflow convert --for-training), or turn BN re-estimation off")
        }
        guard images.count > 0, batch >= 1 else { throw QuantizationError("BN re-estimation needs at least one image and a batch ≥ 1") }
        // The training-mode forward needs only the grids and the fake-quantized layers; the QAT knobs that only
        // matter for learning (estimator, how ranges move) are irrelevant once observers are frozen.
        let configuration = QATConfiguration(weightBits: config.weightBits, activationBits: config.activationBits, scaleUpdate: .maximum,
                                             estimator: .clipped, weightMethod: config.weightCalibration, skip: config.skip,
                                             initialization: config.activationCalibration)
        let qat = try QuantizationAwareModel(graph: graph, configuration: configuration, calibration: calibration, batch: batch) { label, done, total in
            progress("bn re-estimation: " + label, done, total)
        }
        let summary = try qat.reestimateBatchNormStatistics(images: images, batch: batch) { done, total in
            progress("bn re-estimation", done, total)
        }
        return Result(graph: qat.model.exportGraph(), grids: qat.activationGrids(), summary: summary)
    }
}

extension QuantizationAwareModel {
    /// Replaces every BatchNorm's running statistics by their image-weighted average over `images`, run through
    /// the fake-quantized model in training mode (batch statistics, activation ranges frozen, no tape, no
    /// optimizer step). PTQ's BN re-estimation. Tried at the end of QAT too (whose running statistics are an
    /// exponential average of the last ~10 batches): it moved them by 0.002 σ and top-1 by noise, so QAT does not
    /// offer it.
    public func reestimateBatchNormStatistics(images: LabeledImages, batch: Int, threads: Int = 2,
                                              progress: (Int, Int) -> Void = { _, _ in }) throws -> BatchNormReestimationSummary {
        guard images.count > 0, batch >= 1 else { throw QuantizationError("BN re-estimation needs at least one image and a batch ≥ 1") }
        guard !weightLayers.contains(where: { ($0 as? FoldedConvBatchNorm)?.isBatchNormFrozen == true }) else {
            throw QuantizationError("BN re-estimation needs live BatchNorm layers, and BN statistics are frozen")
        }
        freezeObservers()
        let norms = model.batchNormLayers
        let before = norms.map(\.statistics), momenta = norms.map(\.momentum)

        let context = ForwardContext(tape: nil, isTraining: true, threads: threads)
        var pixels: [Float] = [], labels: [Int] = []
        for start in stride(from: 0, to: images.count, by: batch) {
            let range = start..<min(start + batch, images.count)
            // running = (1 − m)·running + m·batch with m = this batch's share of the images seen so far: after the
            // last batch the running statistics are the image-weighted mean of the batch statistics.
            for norm in norms { norm.momentum = Float(range.count) / Float(range.upperBound) }
            images.copyBatch(range, pixels: &pixels, labels: &labels)
            _ = try model(Tensor(shape: [range.count, images.channels, images.height, images.width], data: pixels), context: context)
            progress(range.upperBound, images.count)
        }
        // Back to the model's own momentum before export writes it.
        for (norm, momentum) in zip(norms, momenta) { norm.momentum = momentum }

        var shift = 0.0, ratio = 0.0, channels = 0
        for (norm, old) in zip(norms, before) {
            for c in old.mean.indices {
                let oldDeviation = Double(old.variance[c] + norm.epsilon).squareRoot()
                let newDeviation = Double(norm.statistics.variance[c] + norm.epsilon).squareRoot()
                shift += abs(Double(norm.statistics.mean[c] - old.mean[c])) / oldDeviation
                ratio += newDeviation / oldDeviation
                channels += 1
            }
        }
        return BatchNormReestimationSummary(images: images.count, layers: norms.count,
                                            meanShift: channels > 0 ? shift / Double(channels) : 0,
                                            deviationRatio: channels > 0 ? ratio / Double(channels) : 1)
    }
}
