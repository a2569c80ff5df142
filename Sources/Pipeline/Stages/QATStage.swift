import Foundation
import Datasets
import Graph
import Quantization
import Training

/// `qat`: quantization-aware fine-tuning of the upstream float model (BatchNorm kept, i.e. converted with
/// `for_training`), written as the same QDQ model format `quantize` writes (docs/quantization.md).
/// Defaults follow the reference recipe: 100 steps of batch 32, Adam, lr 1e-4 with the `inv` schedule.
public enum QATStage {
    public static let kind = StageKind(
        name: "qat",
        summary: "quantization-aware training (fake quant, BN folded while training) → QDQ model, bits 2–8",
        version: 2,
        parameters: [
            ParameterSpec("bits", .int, default: .int(8), help: "bits of weights and activations (2–8)"),
            ParameterSpec("weight_bits", .int, default: .null, help: "bits of weights; default: bits"),
            ParameterSpec("activation_bits", .int, default: .null, help: "bits of activations; default: bits"),
            DeploymentTargetParameter.spec,
            ParameterSpec("keep_first_last_8bit", .bool, default: .bool(false), help: "keep the first and last quantized layer (weights, input, output) at 8 bits"),
            ParameterSpec("feature_scale", .choice(["per_tensor", "per_channel"]), default: .string("per_tensor"), help: "activation grids per tensor (per_channel is refused: the int8 engine runs per-tensor activations)"),
            ParameterSpec("scale_update", .choice(["maximum", "moving_average", "learned"]), default: .string("moving_average"), help: "how activation ranges follow the data: widen only, moving average, or learned (LSQ)"),
            ParameterSpec("momentum", .double, default: .double(0.99), help: "for moving_average: weight of the old range per step"),
            ParameterSpec("ste", .choice(StraightThroughEstimator.allCases.map(\.rawValue)), default: .string("clipped"), help: "straight-through estimator: clipped (zero gradient outside the grid) or identity (MNN)"),
            ParameterSpec("weight_method", .choice(["max_abs", "mse"]), default: .string("max_abs"), help: "per-channel weight scales, recomputed every step (observed) or their initial value (learned)"),
            ParameterSpec("weight_scales", .choice(["observed", "learned"]), default: .string("observed"), help: "per-channel weight scales follow the weights every step (observed) or are trained (learned, LSQ)"),
            ParameterSpec("scale_lr", .double, default: .null, help: "learning rate of learned scales and zero points (default: lr)"),
            ParameterSpec("init", .choice(QuantizeStage.methods), default: .string("mse"), help: "how activation ranges are initialised on calibration images"),
            ParameterSpec("init_images", .int, default: .int(1000), help: "calibration images for the initial ranges"),
            ParameterSpec("steps", .int, default: .null, help: "optimizer steps (default 100 unless epochs is given)"),
            ParameterSpec("epochs", .int, default: .null, help: "whole passes over the dataset instead of steps"),
            ParameterSpec("batch", .int, default: .int(32), help: "images per step"),
            ParameterSpec("optimizer", .choice(QATRecipe.OptimizerKind.allCases.map(\.rawValue)), default: .string("adam"), help: "adam, adamw or sgd"),
            ParameterSpec("lr", .double, default: .double(1e-4), help: "learning rate"),
            ParameterSpec("schedule", .choice(QATRecipe.schedules.map(\.rawValue)), default: .string("inv"), help: "inv: lr·(1 + 1e-4·step)^-0.75 (MNN), constant, cosine"),
            ParameterSpec("weight_decay", .double, default: .double(4e-5), help: "weight decay (not on BN, biases or quantization scales)"),
            ParameterSpec("freeze_bn_after", .int, default: .null, help: "steps after which BN statistics freeze and convolutions run exactly folded; default never"),
            ParameterSpec("freeze_observers_after", .int, default: .null, help: "steps after which activation ranges stop moving; default never"),
            ParameterSpec("distill", .double, default: .double(0), help: "weight of the float model's predictions in every training target (knowledge distillation, temperature 1); 0 = labels only"),
            ParameterSpec("label_smoothing", .double, default: .double(0), help: "cross-entropy label smoothing, [0, 1); use the value the float model was trained with"),
            ParameterSpec("augment", .bool, default: .bool(false), help: "random crop (padding 2) and horizontal flip"),
            ParameterSpec("dataset", .dataset, default: .string("fashion-mnist:train"), help: "training (and calibration) images"),
            ParameterSpec("seed", .int, default: .int(0), help: "shuffling and calibration subset"),
            ParameterSpec("skip", .stringList, default: .array([]), help: "node names left in float"),
        ],
        inputs: .oneModel,
        resources: StageResources(cpus: 2, memoryMB: 8192, minutes: 180),
        check: { parameters, _ in problems(parameters) },
        checkUpstream: { _, upstream in upstreamProblems(upstream) },
        run: run)

    /// QAT trains BatchNorm folded into its convolution, so it needs the BatchNormalization nodes, which `convert`
    /// folds away unless `for_training: true`. Other upstream kinds (`train`) keep BN; a model without BN from
    /// elsewhere is refused at run time.
    static func upstreamProblems(_ upstream: [StageInstance]) -> [ParameterProblem] {
        upstream.filter { $0.kind.name == ConvertStage.kind.name && $0.parameters["for_training"] != .bool(true) }.map { convert in
            ParameterProblem(nil, "QAT needs the model's BatchNormalization nodes, but stage '\(convert.name)' folds BN into the convolutions; set for_training: true on '\(convert.name)'")
        }
    }

    /// Parameter mistakes found before anything runs (the planner reports them at the manifest's line:column).
    static func problems(_ parameters: [String: JSONValue]) -> [ParameterProblem] {
        var problems = DeploymentTargetParameter.problems(parameters)
        func int(_ name: String) -> Int? { parameters[name]?.intValue }
        func require(_ condition: Bool, _ name: String, _ message: @autoclosure () -> String) {
            if !condition { problems.append(ParameterProblem(name, message())) }
        }
        for name in ["bits", "weight_bits", "activation_bits"] {
            if let bits = int(name) { require((2...8).contains(bits), name, "must be between 2 and 8, got \(bits)") }
        }
        if int("steps") != nil && int("epochs") != nil { problems.append(ParameterProblem("epochs", "give either 'steps' or 'epochs', not both")) }
        if let steps = int("steps") { require(steps >= 0, "steps", "must be at least 0, got \(steps)") }
        if let epochs = int("epochs") { require(epochs >= 1, "epochs", "must be at least 1, got \(epochs)") }
        if let seed = int("seed") { require(seed >= 0, "seed", "must be at least 0, got \(seed)") }
        for name in ["batch", "init_images"] { if let value = int(name) { require(value >= 1, name, "must be at least 1, got \(value)") } }
        for name in ["freeze_bn_after", "freeze_observers_after"] { if let value = int(name) { require(value >= 0, name, "must be at least 0, got \(value)") } }
        if let rate = parameters["lr"]?.doubleValue { require(rate >= 0 && rate.isFinite, "lr", "must be a number ≥ 0, got \(rate)") }
        if let rate = parameters["scale_lr"]?.doubleValue { require(rate >= 0 && rate.isFinite, "scale_lr", "must be a number ≥ 0, got \(rate)") }
        if parameters["scale_lr"]?.doubleValue != nil, parameters["lr"]?.doubleValue == 0 {
            problems.append(ParameterProblem("scale_lr", "needs lr > 0: the scales' rate is set relative to lr so that the schedule scales both"))
        }
        if let weight = parameters["distill"]?.doubleValue { require(weight >= 0 && weight <= 1, "distill", "must be in [0, 1], got \(weight)") }
        if let smoothing = parameters["label_smoothing"]?.doubleValue { require(smoothing >= 0 && smoothing < 1, "label_smoothing", "must be in [0, 1), got \(smoothing)") }
        if let momentum = parameters["momentum"]?.doubleValue { require(momentum >= 0 && momentum < 1, "momentum", "must be in [0, 1), got \(momentum)") }
        if parameters["feature_scale"]?.stringValue == "per_channel" {
            problems.append(ParameterProblem("feature_scale", "per_channel is not supported: the int8 engine and the ONNX QDQ export use one grid per activation tensor; use per_tensor"))
        }
        return problems
    }

    static func configuration(_ context: StageContext) throws -> QATConfiguration {
        let scaleUpdate: ScaleUpdate
        switch try context.string("scale_update") {
        case "maximum": scaleUpdate = .maximum
        case "learned": scaleUpdate = .learned
        default:
            let momentum = try context.double("momentum")
            guard momentum >= 0, momentum < 1 else { throw StageFailure("stage '\(context.stageID)': momentum must be in [0, 1), got \(momentum)") }
            scaleUpdate = .movingAverage(momentum: Float(momentum))
        }
        if try context.string("feature_scale") == "per_channel" {
            throw StageFailure("stage '\(context.stageID)': feature_scale per_channel is not supported: the int8 engine and the ONNX QDQ export use one grid per activation tensor. Use per_tensor.")
        }
        let initialization: ActivationCalibration
        switch try context.string("init") {
        case "max": initialization = .max
        case "moving_average": initialization = .movingAverage(momentum: 0.99)
        case "percentile": initialization = .percentile(99.99)
        case "kl": initialization = .kl
        default: initialization = .mse
        }
        let target = try DeploymentTargetParameter.target(context)
        let resolved = DeploymentTargetParameter.bits(context.parameters)
        let configuration = QATConfiguration(
            weightBits: resolved.weight, activationBits: resolved.activation,
            scaleUpdate: scaleUpdate, estimator: StraightThroughEstimator(rawValue: try context.string("ste")) ?? .clipped,
            weightMethod: WeightCalibration(rawValue: try context.string("weight_method")) ?? .maxAbs,
            learnedWeightScales: try context.string("weight_scales") == "learned",
            keepFirstAndLastAt8Bits: try context.bool("keep_first_last_8bit"), skip: try context.stringList("skip"),
            initialization: initialization, target: target)
        for (name, value) in [("weight_bits", configuration.weightBits), ("activation_bits", configuration.activationBits)] where !(2...8).contains(value) {
            throw StageFailure("stage '\(context.stageID)': \(name) must be between 2 and 8, got \(value)")
        }
        return configuration
    }

    static func recipe(_ context: StageContext, trainingImages: Int) throws -> QATRecipe {
        var recipe = QATRecipe()
        recipe.batch = try context.int("batch")
        guard recipe.batch >= 1, recipe.batch <= trainingImages else {
            throw StageFailure("stage '\(context.stageID)': batch must be between 1 and the \(trainingImages) training images, got \(recipe.batch)")
        }
        switch (context.optionalInt("steps"), context.optionalInt("epochs")) {
        case (.some, .some): throw StageFailure("stage '\(context.stageID)': give steps or epochs, not both")
        case (let steps?, nil): recipe.steps = steps
        case (nil, let epochs?): recipe.steps = epochs * (trainingImages / recipe.batch)
        case (nil, nil): recipe.steps = 100
        }
        guard recipe.steps >= 0 else { throw StageFailure("stage '\(context.stageID)': steps must be ≥ 0, got \(recipe.steps)") }
        recipe.optimizer = QATRecipe.OptimizerKind(rawValue: try context.string("optimizer")) ?? .adam
        recipe.schedule = QATRecipe.ScheduleKind(rawValue: try context.string("schedule")) ?? .inv
        recipe.learningRate = Float(try context.double("lr"))
        recipe.scaleLearningRate = context.optionalDouble("scale_lr").map(Float.init)
        recipe.weightDecay = Float(try context.double("weight_decay"))
        recipe.freezeBatchNormAfter = context.optionalInt("freeze_bn_after")
        recipe.freezeObserversAfter = context.optionalInt("freeze_observers_after")
        recipe.augment = try context.bool("augment")
        recipe.distillationWeight = Float(try context.double("distill"))
        recipe.labelSmoothing = Float(try context.double("label_smoothing"))
        recipe.seed = UInt64(try context.int("seed"))
        recipe.threads = context.threads
        return recipe
    }

    static func run(_ context: StageContext) throws -> StageResult {
        let problems = problems(context.parameters)
        guard problems.isEmpty else {
            throw StageFailure("stage '\(context.stageID)': " + problems.map(\.description).joined(separator: "; "))
        }
        let configuration = try configuration(context)
        // An ONNX input is imported with BN kept, so `qatflow qat model.onnx` needs no separate convert step.
        let source = try ModelLoader.load(try context.inputModel(), forTraining: true)
        guard source.nodes.contains(where: { $0.op == .batchNormalization }) || !source.nodes.contains(where: { $0.op == .conv }) else {
            throw StageFailure("stage '\(context.stageID)': the input model has no BatchNormalization nodes left; QAT folds BN while training, so convert the model with for_training: true")
        }
        let data = try context.openDataset("dataset")
        try Evaluator.requireFit(source, data)
        if !data.isLabeled, try context.double("distill") < 1 {
            throw StageFailure("stage '\(context.stageID)': the dataset is a folder of images without class subfolders; QAT on unlabeled images needs distill: 1.0 (the float model's predictions as the only targets)")
        }
        let recipe = try recipe(context, trainingImages: data.count)
        let initImages = try context.int("init_images")
        guard initImages >= 1 else { throw StageFailure("stage '\(context.stageID)': init_images must be ≥ 1") }
        let calibration = try CalibrationSubset.take(initImages, from: data, seed: recipe.seed)

        var phase = ""
        let qat = try QuantizationAwareModel(graph: source, configuration: configuration, calibration: calibration) { label, done, total in
            if label != phase { phase = label; context.progress.begin("init: " + label, total: total) }
            context.progress.advanceTo(done)
        }
        context.progress.finish()
        context.log("initial ranges from \(calibration.count) calibration images (\(try context.string("init"))); \(recipe.steps) steps of batch \(recipe.batch), \(qat.weightLayers.count) fake-quantized layers, \(qat.activationQuantizers.count) activation quantizers")
        context.progress.begin("qat", total: recipe.steps)
        let summary: QATRunSummary
        do {
            summary = try QuantizationAwareTraining.train(qat, on: data, recipe: recipe) { report in
                context.progress.advanceTo(report.step)
            }
        } catch let error as TrainingDivergedError {
            throw StageFailure("stage '\(context.stageID)': \(error)")
        }
        context.progress.finish()

        let graph = try qat.exportQuantizedGraph(metadata: [
            "qat_steps": summary.steps, "qat_batch": recipe.batch, "qat_lr": Double(recipe.learningRate),
            "qat_optimizer": recipe.optimizer.rawValue, "qat_schedule": recipe.schedule.rawValue,
        ])
        let output = context.outputDirectory.appendingPathComponent("model.safetensors")
        try ModelFile.write(try context.recordingPreprocessing(graph, dataset: "dataset"), to: output)
        let size = (try FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
        var metrics: [String: JSONValue] = [
            "steps": .int(summary.steps),
            "images": .int(summary.images),
            "seconds": .double(summary.seconds),
            "step_ms": .double(summary.steps > 0 ? summary.seconds * 1000 / Double(summary.steps) : 0),
            "file_bytes": .int(size),
            "fake_quantized_layers": .int(qat.weightLayers.count),
        ]
        if summary.finalLoss.isFinite { metrics["train_loss"] = .double(Double(summary.finalLoss)) }
        if summary.finalAccuracy.isFinite { metrics["train_accuracy"] = .double(Double(summary.finalAccuracy)) }
        if let frozen = summary.batchNormFrozenAt { metrics["bn_frozen_at"] = .int(frozen) }
        metrics.merge(StageResult.skippedImageMetrics(data)) { _, new in new }
        return StageResult(artifacts: ["model": "model.safetensors"], metrics: metrics)
    }
}
