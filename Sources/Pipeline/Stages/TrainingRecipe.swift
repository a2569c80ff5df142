import Foundation
import Training

/// The `train` stage's parameters read into types: what to optimise with, how the learning rate moves, how
/// images are augmented. `problems` checks them (the planner calls it, so mistakes are reported with the
/// manifest's line and column); the initialiser only reads, filling optimizer-dependent defaults.
struct TrainingRecipe {
    typealias OptimizerKind = Training.OptimizerKind
    typealias ScheduleKind = Training.ScheduleKind
    enum AugmentKind: String, CaseIterable { case none, crop, flip, cropFlip = "crop_flip" }

    static let builders = ["mobilenetv2-fmnist"]

    var builder: String?
    var width: Double
    var epochs: Int?
    var steps: Int?
    var batch: Int
    var optimizer: OptimizerKind
    var learningRate: Double
    var momentum: Double
    var nesterov: Bool
    var weightDecay: Double
    var schedule: ScheduleKind
    var warmupSteps: Int
    /// For `step`: epochs between decays.
    var stepSizeEpochs: Int?
    var gamma: Double
    var power: Double
    var minimumLearningRate: Double
    var labelSmoothing: Double
    var augment: AugmentKind
    var cropPadding: Int
    var seed: UInt64
    var clipGradientNorm: Double?
    var threads: Int

    /// Reads parameters that `problems` found nothing wrong with.
    init(_ parameters: [String: JSONValue], defaultThreads: Int = 2) {
        func int(_ name: String) -> Int? { parameters[name]?.intValue }
        func double(_ name: String) -> Double? { parameters[name]?.doubleValue }
        builder = parameters["builder"]?.stringValue
        width = double("width") ?? 0.5
        epochs = int("epochs")
        steps = int("steps")
        batch = int("batch") ?? 128
        optimizer = parameters["optimizer"]?.stringValue.flatMap(OptimizerKind.init(rawValue:)) ?? .sgd
        learningRate = double("lr") ?? (optimizer == .sgd ? 0.1 : 1e-3)
        momentum = double("momentum") ?? 0.9
        nesterov = parameters["nesterov"]?.boolValue ?? false
        weightDecay = double("weight_decay") ?? Self.defaultWeightDecay(optimizer)
        schedule = parameters["schedule"]?.stringValue.flatMap(ScheduleKind.init(rawValue:)) ?? .constant
        warmupSteps = int("warmup_steps") ?? 0
        stepSizeEpochs = int("step_size")
        gamma = double("gamma") ?? (schedule == .inv ? 1e-4 : 0.1)
        power = double("power") ?? 0.75
        minimumLearningRate = double("min_lr") ?? 0
        labelSmoothing = double("label_smoothing") ?? 0
        augment = parameters["augment"]?.stringValue.flatMap(AugmentKind.init(rawValue:)) ?? .none
        cropPadding = int("crop_padding") ?? 2
        seed = UInt64(max(0, int("seed") ?? 0))
        clipGradientNorm = double("clip_grad_norm")
        threads = int("threads") ?? defaultThreads
    }

    /// SGD: MobileNetV2's recipe (4e-5; PyTorch's SGD default is 0). Adam and AdamW: PyTorch's defaults.
    static func defaultWeightDecay(_ optimizer: OptimizerKind) -> Double {
        switch optimizer {
        case .sgd: return 4e-5
        case .adam: return 0
        case .adamw: return 0.01
        }
    }

    // MARK: - Checks

    /// Everything wrong with the parameters, each naming its parameter. `upstreamStages` is the number of
    /// `needs:` (a builder makes its own model; otherwise exactly one upstream model is trained).
    static func problems(_ parameters: [String: JSONValue], upstreamStages: Int) -> [ParameterProblem] {
        var problems: [ParameterProblem] = []
        func int(_ name: String) -> Int? { parameters[name]?.intValue }
        func double(_ name: String) -> Double? { parameters[name]?.doubleValue }
        func require(_ condition: Bool, _ name: String, _ message: @autoclosure () -> String) {
            if !condition { problems.append(ParameterProblem(name, message())) }
        }

        let builder = parameters["builder"]?.stringValue
        if builder != nil && upstreamStages > 0 {
            problems.append(ParameterProblem("builder", "a builder makes a fresh model, but 'needs' also lists \(upstreamStages) upstream stage(s); remove 'builder' to train the upstream model, or remove 'needs'"))
        }
        if builder == nil && upstreamStages != 1 {
            problems.append(ParameterProblem(nil, "nothing to train: set 'builder: \(builders[0])' or list exactly one upstream stage with a model in 'needs' (found \(upstreamStages))"))
        }
        switch (int("epochs"), int("steps")) {
        case (.some, .some): problems.append(ParameterProblem("steps", "give either 'epochs' or 'steps', not both"))
        case (nil, nil): problems.append(ParameterProblem(nil, "how long to train is missing: set 'epochs: N' or 'steps: N'"))
        case (let epochs?, nil): require(epochs >= 1, "epochs", "must be at least 1, got \(epochs)")
        case (nil, let steps?): require(steps >= 1, "steps", "must be at least 1, got \(steps)")
        }
        if let width = double("width") {
            require(width > 0 && width <= 4, "width", "must be in (0, 4], got \(width)")
            require(builder != nil || width == 0.5, "width", "sets the builder's width; without 'builder' the upstream model is trained as it is")
        }
        if let batch = int("batch") { require(batch >= 1, "batch", "must be at least 1, got \(batch)") }
        if let threads = int("threads") { require((1...256).contains(threads), "threads", "must be between 1 and 256, got \(threads)") }
        if let rate = double("lr") { require(rate > 0 && rate.isFinite, "lr", "must be a positive number, got \(rate)") }
        let optimizer = parameters["optimizer"]?.stringValue ?? "sgd"
        let momentum = double("momentum") ?? 0.9
        require(momentum >= 0 && momentum < 1, "momentum", "must be in [0, 1), got \(momentum)")
        if parameters["nesterov"]?.boolValue == true {
            require(optimizer == "sgd", "nesterov", "applies to optimizer sgd only (optimizer is \(optimizer))")
            require(momentum > 0, "nesterov", "needs momentum > 0")
        }
        if let decay = double("weight_decay") { require(decay >= 0 && decay.isFinite, "weight_decay", "must be 0 or more, got \(decay)") }
        let warmup = int("warmup_steps") ?? 0
        require(warmup >= 0, "warmup_steps", "must be 0 or more, got \(warmup)")
        let schedule = parameters["schedule"]?.stringValue ?? "constant"
        if schedule == "step" {
            if let size = int("step_size") {
                require(size >= 1, "step_size", "must be at least 1 epoch, got \(size)")
            } else {
                problems.append(ParameterProblem("schedule", "schedule 'step' needs 'step_size' (epochs between decays by 'gamma')"))
            }
        }
        if let steps = int("steps"), steps >= 1 {
            if schedule == "one_cycle" { require(steps >= 2, "steps", "schedule one_cycle needs at least 2 steps") }
            if schedule == "cosine" || schedule == "one_cycle" {
                require(warmup < steps, "warmup_steps", "must be less than the \(steps) training steps, got \(warmup)")
            }
        }
        if let gamma = double("gamma") { require(gamma > 0 && gamma.isFinite, "gamma", "must be a positive number, got \(gamma)") }
        if let power = double("power") { require(power >= 0 && power.isFinite, "power", "must be 0 or more, got \(power)") }
        if let minimum = double("min_lr") { require(minimum >= 0, "min_lr", "must be 0 or more, got \(minimum)") }
        if let smoothing = double("label_smoothing") {
            require(smoothing >= 0 && smoothing < 1, "label_smoothing", "must be in [0, 1), got \(smoothing)")
        }
        if let padding = int("crop_padding") { require((1...8).contains(padding), "crop_padding", "must be between 1 and 8 pixels, got \(padding)") }
        if let seed = int("seed") { require(seed >= 0, "seed", "must be 0 or more, got \(seed)") }
        if let norm = double("clip_grad_norm") { require(norm > 0 && norm.isFinite, "clip_grad_norm", "must be a positive number, got \(norm)") }
        return problems
    }

    // MARK: - Engine objects

    func makeOptimizer() -> CheckpointableOptimizer {
        optimizer.make(momentum: Float(momentum), nesterov: nesterov, weightDecay: Float(weightDecay), scope: .all)
    }

    /// The learning rate at every step of the whole run (0-based global steps).
    func makeSchedule(totalSteps: Int, stepsPerEpoch: Int) throws -> LearningRateSchedule {
        do {
            return try schedule.make(base: Float(learningRate), totalSteps: totalSteps, warmupSteps: warmupSteps,
                                     stepSize: (stepSizeEpochs ?? 1) * stepsPerEpoch, gamma: Float(gamma), power: Float(power),
                                     minimum: Float(minimumLearningRate))
        } catch let error as ScheduleError {
            throw StageFailure("parameter 'schedule': \(error)")
        }
    }

    /// Random crop and/or flip; padding is filled with `fillValue` (a black pixel after normalisation).
    func augmentation(fillValue: Float) -> Augmentation {
        switch augment {
        case .none: return Augmentation()
        case .crop: return Augmentation(cropPadding: cropPadding, fillValue: fillValue)
        case .flip: return Augmentation(horizontalFlip: true)
        case .cropFlip: return Augmentation(cropPadding: cropPadding, fillValue: fillValue, horizontalFlip: true)
        }
    }
}

/// A run-wide schedule seen from a `Trainer` that starts counting at 0 in the middle of the run (each epoch
/// gets its own trainer so it can be reproduced on resume).
struct ShiftedSchedule: LearningRateSchedule {
    let base: any LearningRateSchedule
    let offset: Int

    func learningRate(at step: Int) -> Float { base.learningRate(at: step + offset) }
}
