import ArgumentParser
import Foundation
import Pipeline

struct QATCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qat",
        abstract: "Quantization-aware training: fine-tune a float model (BN kept) with fake quantization and write a QDQ model.",
        discussion: """
            The defaults are the recipe of pipelines/mobilenetv2.yaml, which keeps a converged model's accuracy at 8 bits:
            100 steps of batch 32, Adam at lr 1e-5 with the inv schedule, KL-calibrated activation ranges held fixed
            (--freeze-observers-after 0), targets distilled from the float model (--distill 1.0). The qat stage's own
            defaults are MNN's reference recipe (lr 1e-4, ranges moving, labels only); see docs/quantization.md.
            """)

    @Argument(help: "A float model with BatchNorm kept: ONNX or a qatflow model file converted with --for-training.") var model: String
    @Option(name: .shortAndLong, help: "Where to write the quantized model.") var output: String
    @OptionGroup var data: DatasetOptions
    @Option(help: "Bits of weights and activations (2–8).") var bits = 8
    @Option(name: .customLong("weight-bits"), help: "Bits of weights (default: --bits).") var weightBits: Int?
    @Option(name: .customLong("activation-bits"), help: "Bits of activations (default: --bits).") var activationBits: Int?
    @Option(help: "Where the model will run: qatflow, or onnxruntime-x86 (7-bit weights where activations have 8 bits, so ONNX Runtime computes the QDQ export exactly on x86 CPUs without VNNI).") var target = "qatflow"
    @Flag(name: .customLong("keep-first-last-8bit"), help: "Keep the first and last quantized layer at 8 bits.") var keepFirstLast = false
    @Option(name: .customLong("scale-update"), help: "maximum, moving_average or learned.") var scaleUpdate = "moving_average"
    @Option(help: "straight-through estimator: clipped or identity.") var ste = "clipped"
    @Option(name: .customLong("weight-method"), help: "max_abs or mse.") var weightMethod = "max_abs"
    @Option(name: .customLong("weight-scales"), help: "observed (follow the weights every step) or learned (LSQ).") var weightScales = "observed"
    @Option(name: .customLong("scale-lr"), help: "Learning rate of learned scales and zero points (default: --lr).") var scaleLearningRate: Double?
    @Option(name: .customLong("init"), help: "How activation ranges are initialised: \(QuantizeStage.methods.joined(separator: ", ")).") var initMethod = "kl"
    @Option(name: .customLong("init-images"), help: "Calibration images for the initial ranges.") var initImages = 1000
    @Option(help: "Optimizer steps.") var steps: Int?
    @Option(help: "Whole passes over the dataset instead of --steps.") var epochs: Int?
    @Option(help: "Images per step.") var batch = 32
    @Option(help: "adam, adamw or sgd.") var optimizer = "adam"
    @Option(help: "Learning rate.") var lr = 1e-5
    @Option(help: "inv, constant or cosine.") var schedule = "inv"
    @Option(name: .customLong("weight-decay"), help: "Weight decay.") var weightDecay = 4e-5
    @Option(name: .customLong("freeze-bn-after"), help: "Steps after which BN statistics freeze.") var freezeBatchNormAfter: Int?
    @Option(name: .customLong("freeze-observers-after"), help: "Steps after which activation ranges stop moving (0: the calibrated ranges are kept; a number above --steps: they follow the data).") var freezeObserversAfter = 0
    @Option(help: "Weight of the float model's predictions in the training targets (distillation), 0–1.") var distill = 1.0
    @Option(name: .customLong("label-smoothing"), help: "Cross-entropy label smoothing, 0–1 (the value the float model was trained with).") var labelSmoothing = 0.0
    @Flag(help: "Random crop and flip.") var augment = false
    @Option(help: "Seed for shuffling and the calibration subset.") var seed = 0
    @Option(help: "Node names left in float. Repeatable.") var skip: [String] = []
    @Flag(help: "No progress line.") var quiet = false

    func run() throws {
        do {
            let (dataset, datasets) = try data.stageDataset(default: "fashion-mnist:train")
            var parameters: [String: JSONValue] = [
                "dataset": .string(dataset), "bits": .int(bits), "keep_first_last_8bit": .bool(keepFirstLast),
                "scale_update": .string(scaleUpdate), "ste": .string(ste), "weight_method": .string(weightMethod),
                "weight_scales": .string(weightScales),
                "init": .string(initMethod), "init_images": .int(initImages), "batch": .int(batch),
                "optimizer": .string(optimizer), "lr": .double(lr), "schedule": .string(schedule),
                "weight_decay": .double(weightDecay), "augment": .bool(augment), "distill": .double(distill),
                "label_smoothing": .double(labelSmoothing), "seed": .int(seed),
                "skip": .array(skip.map(JSONValue.string)), "target": .string(target),
            ]
            if let weightBits { parameters["weight_bits"] = .int(weightBits) }
            if let activationBits { parameters["activation_bits"] = .int(activationBits) }
            if let steps { parameters["steps"] = .int(steps) }
            if let scaleLearningRate { parameters["scale_lr"] = .double(scaleLearningRate) }
            if let epochs { parameters["epochs"] = .int(epochs) }
            if let freezeBatchNormAfter { parameters["freeze_bn_after"] = .int(freezeBatchNormAfter) }
            parameters["freeze_observers_after"] = .int(freezeObserversAfter)
            let result = try DirectRun(kind: QATStage.kind, quiet: quiet).run(
                parameters: parameters, inputModels: [URL(fileURLWithPath: model)],
                destinations: ["model": URL(fileURLWithPath: output)], datasets: datasets)
            printLine("wrote \(output): \(MetricsFormatter.inline(result.metrics))")
        } catch {
            throw fail(error)
        }
    }
}
