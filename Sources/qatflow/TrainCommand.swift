import ArgumentParser
import Datasets
import Foundation
import Pipeline

/// `qatflow train`: the `train` stage run once, outside any manifest. Options left out take the stage's defaults
/// (`qatflow stages` lists them), so the command and a manifest stage mean the same thing.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a float model (a fresh MobileNetV2 with --builder, or MODEL) and write it as a qatflow model file.",
        discussion: """
            A checkpoint is written after every epoch under --checkpoint-dir, in a folder keyed by the arguments and \
            the model file's content; running the same command again after a kill resumes from it. It is removed \
            when training succeeds.
            """)

    @Argument(help: "The model to train (ONNX or qatflow model file); omit it with --builder.") var model: String?
    @Option(name: .shortAndLong, help: "Where to write the trained model.") var output: String
    @Option(help: "Build a fresh model instead of reading MODEL: mobilenetv2-fmnist.") var builder: String?
    @Option(help: "The builder's width multiplier (default 0.5).") var width: Double?
    @OptionGroup var data: DatasetOptions
    @Option(help: "Train on the first N images of --dataset only.") var images: Int?
    @Option(help: "Evaluated after every epoch: NAME:SPLIT (e.g. fashion-mnist:test), or a folder, list or array file preprocessed like --dataset (without its augmentation).") var validation: String?
    @Option(name: .customLong("validation-images"), help: "Validate on the first N images of --validation only.") var validationImages: Int?
    @Option(help: "Passes over the dataset (give --epochs or --steps).") var epochs: Int?
    @Option(help: "Optimizer steps (give --epochs or --steps).") var steps: Int?
    @Option(help: "Images per step (default 128).") var batch: Int?
    @Option(help: "sgd, adam or adamw (default sgd).") var optimizer: String?
    @Option(help: "Learning rate (default 0.1 for sgd, 0.001 for adam/adamw).") var lr: Double?
    @Option(help: "SGD momentum (default 0.9).") var momentum: Double?
    @Flag(help: "Nesterov momentum (sgd).") var nesterov = false
    @Option(name: .customLong("weight-decay"), help: "Default 4e-5 for sgd, 0 for adam, 0.01 for adamw.") var weightDecay: Double?
    @Option(help: "constant, step, cosine, one_cycle or inv (default constant).") var schedule: String?
    @Option(name: .customLong("warmup-steps"), help: "Linear warm-up steps.") var warmupSteps: Int?
    @Option(name: .customLong("step-size"), help: "Schedule step: epochs between decays.") var stepSize: Int?
    @Option(help: "Decay factor (0.1 for step, 1e-4 for inv).") var gamma: Double?
    @Option(name: .customLong("min-lr"), help: "Schedule cosine: final learning rate (default 0).") var minLR: Double?
    @Option(name: .customLong("label-smoothing"), help: "Cross-entropy label smoothing (default 0).") var labelSmoothing: Double?
    @Option(help: "none, crop, flip or crop_flip (default none).") var augment: String?
    @Option(name: .customLong("crop-padding"), help: "Padding before a random crop, pixels (default 2).") var cropPadding: Int?
    @Option(help: "Seed of weights, shuffling, augmentation and Dropout (default 0).") var seed: Int?
    @Option(name: .customLong("clip-grad-norm"), help: "Clip the global gradient norm.") var clipGradNorm: Double?
    @Option(help: "Worker threads (default 2).") var threads: Int?
    @Option(name: .customLong("checkpoint-dir"), help: "Where checkpoints are kept between runs (default .qatflow/cache/checkpoints).") var checkpointDirectory = ".qatflow/cache/checkpoints"
    @Flag(help: "No progress line and no per-epoch lines.") var quiet = false

    func run() throws {
        do {
            guard (model == nil) != (builder == nil) else {
                throw StageFailure(model == nil ? "give a MODEL file to train or --builder mobilenetv2-fmnist"
                                                : "give either a MODEL file or --builder, not both")
            }
            var parameters: [String: JSONValue] = [:]
            func set(_ name: String, _ value: JSONValue?) { if let value { parameters[name] = value } }
            // A limited split is declared as a named dataset, as a manifest's `datasets:` would.
            var datasets: [String: DatasetSpec] = [:]
            func reference(_ spec: DatasetSpec, plain: Bool, as reference: String, limit: Int?, limitOption: String) throws -> JSONValue {
                guard plain, limit == nil else {
                    var spec = spec
                    if let limit {
                        guard limit >= 1 else { throw StageFailure("\(limitOption) must be at least 1, got \(limit)") }
                        spec.limit = limit
                    }
                    let name = limit.map { "\(reference)[:\($0)]" } ?? reference
                    datasets[name] = spec
                    return .string(name)
                }
                return .string(reference)
            }
            set("builder", builder.map(JSONValue.string))
            set("width", width.map(JSONValue.double))
            if data.dataset != nil || images != nil || data.declaresPreprocessing || data.flip {
                let training = try data.spec(default: "fashion-mnist:train")
                set("dataset", try reference(training.spec, plain: training.isShorthand, as: data.dataset ?? "fashion-mnist:train", limit: images, limitOption: "--images"))
            }
            if let validation {
                var options = data
                (options.dataset, options.randomResizedCrop, options.flip) = (validation, nil, false)
                // The validation set is read as the model will be: the training set's deterministic preprocessing.
                if let side = data.randomResizedCrop, !(try options.spec(default: validation).isShorthand) { (options.resize, options.crop) = ("\(side)", side) }
                let spec = try options.spec(default: validation)
                set("validation", try reference(spec.spec, plain: spec.isShorthand, as: validation, limit: validationImages, limitOption: "--validation-images"))
            } else if validationImages != nil {
                throw StageFailure("--validation-images needs --validation")
            }
            set("epochs", epochs.map(JSONValue.int))
            set("steps", steps.map(JSONValue.int))
            set("batch", batch.map(JSONValue.int))
            set("optimizer", optimizer.map(JSONValue.string))
            set("lr", lr.map(JSONValue.double))
            set("momentum", momentum.map(JSONValue.double))
            if nesterov { parameters["nesterov"] = .bool(true) }
            set("weight_decay", weightDecay.map(JSONValue.double))
            set("schedule", schedule.map(JSONValue.string))
            set("warmup_steps", warmupSteps.map(JSONValue.int))
            set("step_size", stepSize.map(JSONValue.int))
            set("gamma", gamma.map(JSONValue.double))
            set("min_lr", minLR.map(JSONValue.double))
            set("label_smoothing", labelSmoothing.map(JSONValue.double))
            set("augment", augment.map(JSONValue.string))
            set("crop_padding", cropPadding.map(JSONValue.int))
            set("seed", seed.map(JSONValue.int))
            set("clip_grad_norm", clipGradNorm.map(JSONValue.double))
            set("threads", threads.map(JSONValue.int))
            let result = try DirectRun(kind: TrainStage.kind, quiet: quiet,
                                       checkpointRoot: URL(fileURLWithPath: checkpointDirectory).standardizedFileURL).run(
                parameters: parameters, inputModels: model.map { [URL(fileURLWithPath: $0)] } ?? [],
                destinations: ["model": URL(fileURLWithPath: output)], datasets: datasets)
            printLine("wrote \(output): \(MetricsFormatter.inline(result.metrics))")
        } catch {
            throw fail(error)
        }
    }
}
