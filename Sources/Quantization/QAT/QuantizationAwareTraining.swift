import Datasets
import Foundation
import Tensor
import Training

/// The fine-tuning part of QAT. Defaults are the reference recipe (MNN's demo): 100 steps of batch 32, Adam
/// (β₁ 0.9) with weight decay 4e-5, lr 1e-4 · (1 + 1e-4·step)^−0.75.
public struct QATRecipe: Sendable, Equatable {
    public typealias OptimizerKind = Training.OptimizerKind
    public typealias ScheduleKind = Training.ScheduleKind
    /// The schedules a QAT run offers (the others need epochs or warm-up settings QAT does not take).
    public static let schedules: [ScheduleKind] = [.inv, .constant, .cosine]

    public var steps: Int = 100
    public var batch: Int = 32
    public var optimizer: OptimizerKind = .adam
    public var learningRate: Float = 1e-4
    /// The learning rate of learned quantization scales and zero points (LSQ), when it should differ from
    /// `learningRate`; the schedule scales both alike.
    public var scaleLearningRate: Float?
    public var schedule: ScheduleKind = .inv
    public var weightDecay: Float = 4e-5
    /// SGD momentum (Adam uses β₁ = 0.9).
    public var momentum: Float = 0.9
    /// After this many steps BatchNorm statistics freeze and convolutions run exactly folded (nil: never).
    public var freezeBatchNormAfter: Int?
    /// After this many steps activation ranges stop following the data (nil: never).
    public var freezeObserversAfter: Int?
    /// Knowledge distillation from the float model QAT started from: the weight of its softmax in every target
    /// (0: labels only). Each step also runs the float model forward, in evaluation mode.
    public var distillationWeight: Float = 0
    /// Cross-entropy label smoothing (0: hard labels). Fine-tuning a model with the smoothing it was trained with
    /// keeps the objective it converged on; hard labels push every logit margin wider.
    public var labelSmoothing: Float = 0
    /// Random crop (padding 2) and horizontal flip on the training images.
    public var augment = false
    public var seed: UInt64 = 0
    public var threads = 2

    public init() {}

    func makeOptimizer() -> Optimizer {
        optimizer.make(momentum: momentum, weightDecay: weightDecay, scope: .weightsOnly)
    }

    /// inv is MNN's lr·(1 + 1e-4·step)^−0.75.
    func makeSchedule() throws -> LearningRateSchedule {
        guard Self.schedules.contains(schedule) else {
            throw QuantizationError("QAT takes schedule \(Self.schedules.map(\.rawValue).joined(separator: ", ")), not \(schedule.rawValue)")
        }
        return try schedule.make(base: learningRate, totalSteps: max(1, steps), gamma: 1e-4, power: 0.75)
    }
}

/// What a QAT run did.
public struct QATRunSummary: Sendable {
    public var steps: Int
    public var images: Int
    public var seconds: Double
    /// Mean loss and accuracy over the last reported window of training steps (training mode, fake-quantized).
    public var finalLoss: Float
    public var finalAccuracy: Float
    public var batchNormFrozenAt: Int?
    public var observersFrozenAt: Int?
}

/// Runs the QAT fine-tuning loop on a `QuantizationAwareModel`.
public enum QuantizationAwareTraining {
    public static func train(_ qat: QuantizationAwareModel, on data: any ImageDataset, recipe: QATRecipe,
                             progress: (TrainingProgress) -> Void = { _ in }) throws -> QATRunSummary {
        guard recipe.steps >= 0 else { throw QuantizationError("steps must be ≥ 0, got \(recipe.steps)") }
        guard recipe.batch >= 1, recipe.batch <= data.count else {
            throw QuantizationError("batch \(recipe.batch) must be between 1 and the \(data.count) training images")
        }
        if let scaleLearningRate = recipe.scaleLearningRate {
            guard scaleLearningRate >= 0, scaleLearningRate.isFinite, recipe.learningRate > 0 else {
                throw QuantizationError("the scales' learning rate must be ≥ 0 and the learning rate > 0")
            }
            for parameter in qat.model.parameters where parameter.role == .quantizationRange {
                parameter.learningRateMultiplier = scaleLearningRate / recipe.learningRate
            }
        }
        guard recipe.labelSmoothing >= 0, recipe.labelSmoothing < 1 else {
            throw QuantizationError("label smoothing must be in [0, 1), got \(recipe.labelSmoothing)")
        }
        let trainer = Trainer(model: qat.model, optimizer: recipe.makeOptimizer(), schedule: try recipe.makeSchedule(),
                              loss: SoftmaxCrossEntropy(labelSmoothing: recipe.labelSmoothing),
                              threads: recipe.threads, seed: recipe.seed)
        if recipe.distillationWeight > 0 {
            guard recipe.distillationWeight <= 1 else { throw QuantizationError("the distillation weight must be in [0, 1], got \(recipe.distillationWeight)") }
            trainer.distillation = (try TrainableModel(graph: qat.model.sourceGraph), recipe.distillationWeight)
        }
        let augmentation = recipe.augment ? Augmentation(cropPadding: 2, horizontalFlip: true) : Augmentation()
        // In-memory batches are a copy away; streamed ones are decoded on another thread while a step runs.
        let shuffled = ShuffledBatches(data, batchSize: recipe.batch, augmentation: augmentation, seed: recipe.seed)
        var batches: any BatchSource = data is LabeledImages ? shuffled : PrefetchingBatches(shuffled)
        var summary = QATRunSummary(steps: 0, images: 0, seconds: 0, finalLoss: .nan, finalAccuracy: .nan)
        let start = Date()
        // Freezing happens between steps, so the loop runs in segments between freeze points.
        var done = 0
        func freezeIfDue() {
            if let at = recipe.freezeBatchNormAfter, done >= at, summary.batchNormFrozenAt == nil {
                qat.freezeBatchNorm()
                summary.batchNormFrozenAt = done
            }
            if let at = recipe.freezeObserversAfter, done >= at, summary.observersFrozenAt == nil {
                qat.freezeObservers()
                summary.observersFrozenAt = done
            }
        }
        freezeIfDue()
        while done < recipe.steps {
            let nextFreeze = [recipe.freezeBatchNormAfter, recipe.freezeObserversAfter].compactMap { $0 }.filter { $0 > done }.min()
            let segment = min(recipe.steps, nextFreeze ?? recipe.steps) - done
            try trainer.train(batches: &batches, steps: segment, reportEvery: 10) { report in
                summary.finalLoss = report.loss
                summary.finalAccuracy = report.accuracy
                var overall = report
                overall.totalSteps = recipe.steps
                progress(overall)
            }
            done += segment
            freezeIfDue()
        }
        summary.steps = done
        summary.images = done * recipe.batch
        summary.seconds = Date().timeIntervalSince(start)
        return summary
    }
}
