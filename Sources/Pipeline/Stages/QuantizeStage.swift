import Foundation
import Datasets
import Graph
import Quantization

/// `quantize`: post-training quantization of the upstream float model into a QDQ model
/// (docs/quantization.md), calibrating activation ranges on a seeded random subset of a dataset.
public enum QuantizeStage {
    public static let methods = ["max", "moving_average", "kl", "percentile", "mse"]

    public static let kind = StageKind(
        name: "quantize",
        summary: "post-training quantization (calibration) → QDQ model, bits 2–8 for weights and activations",
        version: 2,
        parameters: [
            ParameterSpec("bits", .int, default: .int(8), help: "bits of weights and activations (2–8)"),
            ParameterSpec("weight_bits", .int, default: .null, help: "bits of weights; default: bits"),
            ParameterSpec("activation_bits", .int, default: .null, help: "bits of activations; default: bits"),
            DeploymentTargetParameter.spec,
            ParameterSpec("method", .choice(methods), default: .string("mse"), help: "how activation ranges are chosen (see docs/quantization.md, Calibration methods)"),
            ParameterSpec("percentile", .double, default: .double(99.99), help: "for method percentile: the percentile kept at both ends"),
            ParameterSpec("momentum", .double, default: .double(0.99), help: "for method moving_average: weight of the old range per batch"),
            ParameterSpec("weight_method", .choice(["max_abs", "mse"]), default: .string("max_abs"), help: "how per-channel weight scales are chosen"),
            ParameterSpec("dataset", .dataset, default: .string("fashion-mnist:train"), help: "calibration images come from here"),
            ParameterSpec("images", .int, default: .int(1000), help: "calibration images (a seeded random subset)"),
            ParameterSpec("batch", .int, default: .int(100), help: "images per calibration forward pass"),
            ParameterSpec("seed", .int, default: .int(0), help: "chooses the calibration subset"),
            ParameterSpec("skip", .stringList, default: .array([]), help: "node names left in float"),
            ParameterSpec("bias_correction", .bool, default: .bool(false), help: "empirical bias correction: each quantized Conv/Gemm's bias absorbs the mean error of its quantized output"),
            ParameterSpec("bias_correction_images", .int, default: .int(256), help: "images bias correction measures on (a seeded subset of the calibration images)"),
            ParameterSpec("bn_reestimate_images", .int, default: .int(0), help: "training images run through the fake-quantized model in training mode to re-estimate BatchNorm statistics before folding (0: off; needs a model converted with for_training: true)"),
        ],
        inputs: .oneModel,
        resources: StageResources(cpus: 2, memoryMB: 4096, minutes: 60),
        check: { parameters, _ in problems(parameters) },
        checkUpstream: { parameters, upstream in upstreamProblems(parameters, upstream) },
        run: run)

    /// Parameter mistakes found before anything runs (the planner reports them at the manifest's line:column).
    static func problems(_ parameters: [String: JSONValue]) -> [ParameterProblem] {
        var problems = DeploymentTargetParameter.problems(parameters)
        if let images = parameters["bias_correction_images"]?.intValue, images < 1 {
            problems.append(ParameterProblem("bias_correction_images", "must be at least 1, got \(images)"))
        }
        if let images = parameters["bn_reestimate_images"]?.intValue, images < 0 {
            problems.append(ParameterProblem("bn_reestimate_images", "must be at least 0 (0: off), got \(images)"))
        }
        return problems
    }

    /// BN re-estimation needs the BatchNormalization nodes, which `convert` folds unless `for_training: true`.
    /// Other upstream kinds (`train`) keep BN; a model without BN from elsewhere is refused at run time.
    static func upstreamProblems(_ parameters: [String: JSONValue], _ upstream: [StageInstance]) -> [ParameterProblem] {
        guard let images = parameters["bn_reestimate_images"]?.intValue, images > 0 else { return [] }
        return upstream.filter { $0.kind.name == ConvertStage.kind.name && $0.parameters["for_training"] != .bool(true) }.map { convert in
            ParameterProblem("bn_reestimate_images", "needs the model's BatchNormalization nodes, but stage '\(convert.name)' folds BN into the convolutions; set for_training: true on '\(convert.name)', or bn_reestimate_images: 0")
        }
    }

    public static func configuration(_ context: StageContext) throws -> QuantizationConfig {
        let method: ActivationCalibration
        switch try context.string("method") {
        case "max": method = .max
        case "moving_average": method = .movingAverage(momentum: try context.double("momentum"))
        case "percentile": method = .percentile(try context.double("percentile"))
        case "mse": method = .mse
        default: method = .kl
        }
        let target = try DeploymentTargetParameter.target(context)
        let resolved = DeploymentTargetParameter.bits(context.parameters)
        let config = QuantizationConfig(weightBits: resolved.weight,
                                        activationBits: resolved.activation,
                                        activationCalibration: method,
                                        weightCalibration: WeightCalibration(rawValue: try context.string("weight_method")) ?? .maxAbs,
                                        skip: try context.stringList("skip"),
                                        biasCorrection: try context.bool("bias_correction"),
                                        biasCorrectionImages: try context.int("bias_correction_images"),
                                        batchNormReestimationImages: try context.int("bn_reestimate_images"),
                                        seed: UInt64(try context.int("seed")), target: target)
        for (name, value) in [("weight_bits", config.weightBits), ("activation_bits", config.activationBits)] where !(2...8).contains(value) {
            throw StageFailure("stage '\(context.stageID)': \(name) must be between 2 and 8, got \(value)")
        }
        return config
    }

    static func run(_ context: StageContext) throws -> StageResult {
        let problems = problems(context.parameters)
        guard problems.isEmpty else {
            throw StageFailure("stage '\(context.stageID)': " + problems.map(\.description).joined(separator: "; "))
        }
        let config = try configuration(context)
        let images = try context.int("images"), batch = try context.int("batch")
        guard images >= 1, batch >= 1 else { throw StageFailure("stage '\(context.stageID)': images and batch must be ≥ 1") }
        // BN re-estimation needs BN kept: an ONNX input is then imported in training form (ours is read as it is).
        let source = try ModelLoader.load(try context.inputModel(), forTraining: config.batchNormReestimationImages > 0)
        if config.batchNormReestimationImages > 0 && !source.nodes.contains(where: { $0.op == .batchNormalization }) {
            throw StageFailure("stage '\(context.stageID)': bn_reestimate_images needs the model's BatchNormalization nodes, and the input model has none (BN already folded); convert it with for_training: true (qatflow convert --for-training), or set bn_reestimate_images: 0")
        }
        let full = try context.openDataset("dataset")
        try Evaluator.requireFit(source, full)
        let calibration = try CalibrationSubset.take(images, from: full, seed: UInt64(try context.int("seed")))
        var phase = ""
        let result = try PostTrainingQuantizer(config: config).quantize(source, calibration: calibration, batch: batch,
                                                                         training: full) { label, done, total in
            if label != phase { phase = label; context.progress.begin(label, total: total) }
            context.progress.advanceTo(done)
        }
        context.progress.finish()
        let output = context.outputDirectory.appendingPathComponent("model.safetensors")
        try ModelFile.write(try context.recordingPreprocessing(result.graph, dataset: "dataset"), to: output)
        let size = (try FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
        let layers = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(result.layers.map(SafeReport.init)))
        let worst = result.layers.filter { $0.sqnr.isFinite }.min { $0.sqnr < $1.sqnr }
        var metrics: [String: JSONValue] = [
            "quantized_nodes": .int(result.quantizedNodes),
            "float_nodes": .array(result.floatNodes.map(JSONValue.string)),
            "file_bytes": .int(size),
            "calibration_images": .int(calibration.count),
            "layers": layers,
        ]
        if let worst { metrics["min_sqnr_db"] = .double(worst.sqnr) }
        metrics.merge(StageResult.skippedImageMetrics(full)) { _, new in new }
        if !result.biasCorrection.isEmpty {
            let corrections = result.biasCorrection
            metrics["bias_correction_images"] = .int(result.biasCorrectionImages)
            metrics["bias_corrected_layers"] = .int(corrections.count)
            metrics["bias_correction_max_abs"] = .double(corrections.map(\.maxAbsoluteCorrection).max() ?? 0)
            // Mean over layers of mean |correction| / RMS of the float output: how large corrections are where they act.
            let relative = corrections.map { $0.outputRMS > 0 ? $0.meanAbsoluteCorrection / $0.outputRMS : 0 }
            metrics["bias_correction_mean_relative"] = .double(relative.reduce(0, +) / Double(relative.count))
            metrics["bias_correction"] = .array(corrections.map { report in
                .object(["node": .string(report.node), "mean_abs": .double(report.meanAbsoluteCorrection),
                         "max_abs": .double(report.maxAbsoluteCorrection), "output_rms": .double(report.outputRMS)])
            })
        }
        if let summary = result.batchNormReestimation {
            metrics["bn_reestimate_images"] = .int(summary.images)
            metrics["bn_reestimated_layers"] = .int(summary.layers)
            metrics["bn_mean_shift_sigma"] = .double(summary.meanShift)
            metrics["bn_std_ratio"] = .double(summary.deviationRatio)
        }
        return StageResult(artifacts: ["model": "model.safetensors"], metrics: metrics)
    }
}

/// JSON cannot hold NaN/∞: the report stores them as null.
private struct SafeReport: Encodable {
    let report: LayerQuantizationReport
    init(_ report: LayerQuantizationReport) { self.report = report }
    enum Keys: String, CodingKey { case tensor, scale, zero_point, low, high, clipping_ratio, sqnr_db, cosine }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(report.tensor, forKey: .tensor)
        try container.encode(report.scale, forKey: .scale)
        try container.encode(report.zeroPoint, forKey: .zero_point)
        try container.encode(report.low, forKey: .low)
        try container.encode(report.high, forKey: .high)
        try container.encode(report.clippingRatio, forKey: .clipping_ratio)
        try container.encode(report.sqnr.isFinite ? report.sqnr : nil, forKey: .sqnr_db)
        try container.encode(report.cosine.isFinite ? report.cosine : nil, forKey: .cosine)
    }
}
