import Foundation
import Datasets
import Graph
import Training

/// `train`: trains a float model — a fresh one from a builder, or the upstream stage's — with SGD/Adam/AdamW,
/// a learning-rate schedule and augmentation. Every epoch ends with a checkpoint in the stage's checkpoint
/// folder, so a killed run continues where it stopped when run again; a diverging run stops with the step,
/// epoch and learning rate, keeping the last good checkpoint.
public enum TrainStage {
    public static let kind = StageKind(
        name: "train",
        summary: "train a float model (builder or upstream model): SGD/Adam/AdamW, LR schedules, augmentation, a resumable checkpoint each epoch",
        version: 2,
        parameters: [
            ParameterSpec("builder", .choice(TrainingRecipe.builders), default: .null, help: "build a fresh model: mobilenetv2-fmnist (MobileNetV2, 1×32×32, 10 classes); without it the stage trains its one upstream model"),
            ParameterSpec("width", .double, default: .double(0.5), help: "the builder's width multiplier"),
            ParameterSpec("epochs", .int, default: .null, help: "passes over the dataset (give epochs or steps)"),
            ParameterSpec("steps", .int, default: .null, help: "optimizer steps (give epochs or steps); an epoch is ⌊images / batch⌋ steps"),
            ParameterSpec("batch", .int, default: .int(128), help: "images per step (the last incomplete batch of an epoch is dropped)"),
            ParameterSpec("optimizer", .choice(TrainingRecipe.OptimizerKind.allCases.map(\.rawValue)), default: .string("sgd"), help: "sgd, adam (L2 in the gradient) or adamw (decoupled decay)"),
            ParameterSpec("lr", .double, default: .null, help: "learning rate (peak for one_cycle); default 0.1 for sgd, 0.001 for adam/adamw"),
            ParameterSpec("momentum", .double, default: .double(0.9), help: "SGD momentum"),
            ParameterSpec("nesterov", .bool, default: .bool(false), help: "Nesterov momentum (sgd)"),
            ParameterSpec("weight_decay", .double, default: .null, help: "default 4e-5 for sgd (MobileNetV2's recipe), 0 for adam, 0.01 for adamw"),
            ParameterSpec("schedule", .choice(TrainingRecipe.ScheduleKind.allCases.map(\.rawValue)), default: .string("constant"), help: "learning-rate schedule"),
            ParameterSpec("warmup_steps", .int, default: .int(0), help: "linear warm-up from 0 (one_cycle: the rising phase, default 30 % of the steps)"),
            ParameterSpec("step_size", .int, default: .null, help: "schedule step: epochs between decays by gamma"),
            ParameterSpec("gamma", .double, default: .null, help: "decay factor: 0.1 for step, 1e-4 for inv"),
            ParameterSpec("power", .double, default: .double(0.75), help: "schedule inv: lr·(1 + gamma·step)^(−power)"),
            ParameterSpec("min_lr", .double, default: .double(0), help: "schedule cosine: the final learning rate"),
            ParameterSpec("label_smoothing", .double, default: .double(0), help: "cross-entropy label smoothing"),
            ParameterSpec("augment", .choice(TrainingRecipe.AugmentKind.allCases.map(\.rawValue)), default: .string("none"), help: "random crop after padding, horizontal flip, or both"),
            ParameterSpec("crop_padding", .int, default: .int(2), help: "pixels of black padding per side before a random crop (2–4 is usual)"),
            ParameterSpec("dataset", .dataset, default: .string("fashion-mnist:train"), help: "training images"),
            ParameterSpec("validation", .dataset, default: .null, help: "evaluated at the end of every epoch (e.g. fashion-mnist:test)"),
            ParameterSpec("seed", .int, default: .int(0), help: "initial weights, shuffling, augmentation and Dropout all derive from it"),
            ParameterSpec("clip_grad_norm", .double, default: .null, help: "clip the global gradient norm to this value"),
            ParameterSpec("threads", .int, default: .null, help: "worker threads (default: the stage's resources.cpus, 2 unless the manifest says)"),
        ],
        inputs: .any,
        resources: StageResources(cpus: 2, memoryMB: 8192, minutes: 720),
        check: { parameters, upstream in TrainingRecipe.problems(parameters, upstreamStages: upstream) },
        run: run)

    /// A loss above this multiple of the run's first loss stops training (as `Trainer` does within one trainer).
    static let divergenceFactor: Float = 20

    static func run(_ context: StageContext) throws -> StageResult {
        let started = Date()
        let problems = TrainingRecipe.problems(context.parameters, upstreamStages: context.inputs.count)
        guard problems.isEmpty else {
            throw StageFailure("stage '\(context.stageID)': " + problems.map(\.description).joined(separator: "; "))
        }
        let recipe = TrainingRecipe(context.parameters, defaultThreads: context.threads)
        let spec = try context.dataset("dataset")
        let data = try context.openDataset(spec)
        guard data.isLabeled else {
            throw StageFailure("stage '\(context.stageID)': the dataset is a folder of images without class subfolders; training needs labels (class subfolders or an image list)")
        }
        let validation = try context.optionalDataset("validation").map { try context.openDataset($0) }
        guard recipe.batch <= data.count else {
            throw StageFailure("stage '\(context.stageID)': parameter 'batch' is \(recipe.batch), more than the \(data.count) images of the dataset")
        }
        let stepsPerEpoch = data.count / recipe.batch
        let totalSteps = recipe.steps ?? (recipe.epochs ?? 1) * stepsPerEpoch
        let plan = RunShape(stepsPerEpoch: stepsPerEpoch, totalSteps: totalSteps)
        let schedule = try recipe.makeSchedule(totalSteps: totalSteps, stepsPerEpoch: stepsPerEpoch)

        let folder = CheckpointFolder(directory: context.checkpointDirectory)
        let fingerprint = JSONValue.object(context.parameters).canonical
        let resumed = folder.latest(parameters: fingerprint, log: context.log)
        let graph = try resumed?.checkpoint.model ?? initialModel(context, recipe)
        try checkFits(graph, data, role: "dataset", stageID: context.stageID)
        if let validation { try checkFits(graph, validation, role: "validation", stageID: context.stageID) }
        let model = try TrainableModel(graph: graph)
        let optimizer = recipe.makeOptimizer()
        if let resumed {
            try optimizer.restoreState(resumed.checkpoint.optimizer, for: model.parameters)
            let progress = resumed.checkpoint.progress
            context.log("resuming from the checkpoint of epoch \(progress.epoch)/\(plan.epochs) (step \(progress.step)/\(totalSteps)): \(resumed.file.path)")
        }

        var loop = TrainingLoop(context: context, recipe: recipe, shape: plan, schedule: schedule, model: model,
                                optimizer: optimizer, data: data, blackPixel: Float((0 - spec.mean(ofChannel: 0)) / spec.std(ofChannel: 0)),
                                validation: validation, folder: folder,
                                fingerprint: fingerprint, resumed: resumed, started: started)
        try loop.run()

        let output = context.outputDirectory.appendingPathComponent("model.safetensors")
        try ModelFile.write(try context.recordingPreprocessing(model.exportGraph(), dataset: "dataset"), to: output)
        return StageResult(artifacts: ["model": "model.safetensors"], metrics: loop.metrics(parameterCount: model.parameterCount))
    }

    /// The builder's model, or the upstream one (float, with BN kept trainable when it comes from ONNX).
    static func initialModel(_ context: StageContext, _ recipe: TrainingRecipe) throws -> Graph {
        if recipe.builder != nil {
            var builder = MobileNetV2Builder.fashionMNISTWorkModel(seed: recipe.seed)
            builder.widthMultiplier = recipe.width
            return builder.build()
        }
        let graph = try ModelLoader.load(try context.inputModel(), forTraining: true)
        if Evaluator.isQuantized(graph) {
            throw StageFailure("stage '\(context.stageID)': the upstream model is quantized (QDQ); train takes a float model (quantization-aware training is the qat stage)")
        }
        return graph
    }

    /// The model's input must take the dataset's images and its output must have a logit for every class.
    static func checkFits(_ graph: Graph, _ data: any ImageDataset, role: String, stageID: String) throws {
        guard let input = graph.inputs.first else { throw StageFailure("stage '\(stageID)': the model has no input") }
        let expected = Array(input.shape.dropFirst()), given = [data.channels, data.height, data.width]
        guard expected.count == 3, zip(expected, given).allSatisfy({ $0 == -1 || $0 == $1 }) else {
            throw StageFailure("stage '\(stageID)': the model takes \(Evaluator.formatShape(input.shape)) images, but parameter '\(role)' gives N×\(given.map(String.init).joined(separator: "×")); check the dataset's pad")
        }
        if let classes = graph.outputs.first?.shape.last, classes > 0, classes < data.classNames.count {
            throw StageFailure("stage '\(stageID)': the model has \(classes) outputs, but parameter '\(role)' has \(data.classNames.count) classes")
        }
    }
}

/// How a run divides into epochs: `totalSteps` steps, `stepsPerEpoch` per epoch, the last epoch possibly shorter
/// (when `steps` is not a multiple of an epoch).
struct RunShape {
    let stepsPerEpoch: Int
    let totalSteps: Int

    var epochs: Int { (totalSteps + stepsPerEpoch - 1) / stepsPerEpoch }

    /// Steps of the 0-based `epoch`.
    func steps(inEpoch epoch: Int) -> Int { min(stepsPerEpoch, totalSteps - epoch * stepsPerEpoch) }
}
