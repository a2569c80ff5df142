import Datasets
import Foundation
import Tensor

/// Training stopped because the loss or the gradients stopped being usable numbers.
public struct TrainingDivergedError: Error, CustomStringConvertible, Sendable {
    /// The step (0-based) whose loss or gradient was bad; its update was *not* applied.
    public var step: Int
    public var loss: Float
    public var learningRate: Float
    public var reason: String

    public var description: String {
        "training diverged at step \(step) (loss \(loss), learning rate \(learningRate)): \(reason). "
            + "The model keeps the weights from before this step; lower the learning rate or enable gradient clipping."
    }
}

/// What a progress callback sees.
public struct TrainingProgress: Sendable {
    /// Steps finished so far.
    public var step: Int
    public var totalSteps: Int
    public var epoch: Double
    /// Mean loss and accuracy over the steps since the last report.
    public var loss: Float
    public var accuracy: Float
    public var learningRate: Float
    /// Training throughput since the last report.
    public var imagesPerSecond: Double
}

/// Outcome of one optimisation step.
public struct StepResult: Sendable {
    public var loss: Float
    public var correct: Int
    public var count: Int
    public var learningRate: Float
    /// Global gradient norm before clipping.
    public var gradientNorm: Float
}

/// Runs the training loop: forward in training mode, loss, backward, optional global-norm clipping, optimizer
/// step at the schedule's learning rate, with divergence checks before anything is updated.
public final class Trainer {
    public let model: TrainableModel
    public let optimizer: Optimizer
    public var schedule: LearningRateSchedule
    public var loss: SoftmaxCrossEntropy
    /// Knowledge distillation: a model (evaluation mode) whose softmax is mixed into every target with `weight`.
    public var distillation: (teacher: TrainableModel, weight: Float)?
    /// Clip the global gradient norm to this value (nil: no clipping).
    public var gradientClipNorm: Float?
    /// Stop when the loss exceeds this multiple of the first step's loss (besides NaN/∞, which always stop).
    public var divergenceFactor: Float = 20
    public var threads: Int
    /// Optimizer steps taken; the schedule is evaluated at this step.
    public private(set) var step = 0
    private var firstLoss: Float?
    private var random: SeededRandom

    public init(model: TrainableModel, optimizer: Optimizer, schedule: LearningRateSchedule,
                loss: SoftmaxCrossEntropy = SoftmaxCrossEntropy(), threads: Int = 2, seed: UInt64 = 0) {
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.loss = loss
        self.threads = max(1, threads)
        self.random = SeededRandom(seed: seed).derived(0xD20)
        _ = AllocatorTuning.applied
    }

    /// One step on `batch`. Throws `TrainingDivergedError` (leaving weights and BN statistics as they were before
    /// the step) when the loss or the
    /// gradient norm is not finite, or the loss exceeds `divergenceFactor` × the first loss.
    @discardableResult
    public func trainStep(_ batch: Batch) throws -> StepResult {
        let tape = GradientTape()
        let context = ForwardContext(tape: tape, isTraining: true, threads: threads, random: random)
        // The forward pass moves BN running statistics; a diverged step puts them back with the weights untouched.
        let norms = model.batchNormLayers
        let statisticsBefore = norms.map(\.statistics)
        model.zeroGradients()
        let logits = try model(batch.images, context: context)
        let teacher = try distillation.map { softmaxRows(try $0.teacher.predict(batch.images, threads: threads)) }
        let (lossValue, correct) = loss(logits, labels: batch.labels, teacher: teacher, teacherWeight: distillation?.weight ?? 0,
                                        context: context)
        random = context.random
        let value = lossValue.value.data[0]
        let learningRate = schedule.learningRate(at: step)
        func diverged(_ reason: String) -> TrainingDivergedError {
            tape.reset()
            for (layer, statistics) in zip(norms, statisticsBefore) { layer.statistics = statistics }
            return TrainingDivergedError(step: step, loss: value, learningRate: learningRate, reason: reason)
        }
        guard value.isFinite else { throw diverged("the loss is not a finite number") }
        if let firstLoss, value > divergenceFactor * max(firstLoss, 1e-3) {
            throw diverged("the loss exceeds \(divergenceFactor)× the first step's loss (\(firstLoss))")
        }
        if firstLoss == nil { firstLoss = value }
        tape.backward(from: lossValue)
        let norm: Float
        if let gradientClipNorm {
            norm = GradientClipping.clipGlobalNorm(model.parameters, maxNorm: gradientClipNorm)
        } else {
            norm = GradientClipping.globalNorm(model.parameters)
        }
        guard norm.isFinite else { throw diverged("the gradient norm is not finite") }
        optimizer.step(model.parameters, learningRate: learningRate)
        step += 1
        return StepResult(loss: value, correct: correct, count: batch.count, learningRate: learningRate, gradientNorm: norm)
    }

    /// Trains for `steps` steps from `batches`, calling `progress` every `reportEvery` steps and after the last.
    public func train<Source: BatchSource>(batches: inout Source, steps: Int, reportEvery: Int = 50,
                                          progress: (TrainingProgress) -> Void = { _ in }) throws {
        let start = step
        var lossSum: Double = 0, correct = 0, seen = 0, stepsInWindow = 0
        var windowStart = Date()
        for index in 0..<steps {
            let batch = try batches.next()
            let result = try trainStep(batch)
            lossSum += Double(result.loss)
            correct += result.correct
            seen += result.count
            stepsInWindow += 1
            if (index + 1) % max(1, reportEvery) == 0 || index == steps - 1 {
                let elapsed = Date().timeIntervalSince(windowStart)
                progress(TrainingProgress(step: step, totalSteps: start + steps,
                                          epoch: Double(step) / Double(max(1, batches.batchesPerEpoch)),
                                          loss: Float(lossSum / Double(stepsInWindow)),
                                          accuracy: Float(correct) / Float(max(1, seen)), learningRate: result.learningRate,
                                          imagesPerSecond: elapsed > 0 ? Double(seen) / elapsed : 0))
                lossSum = 0; correct = 0; seen = 0; stepsInWindow = 0
                windowStart = Date()
            }
        }
    }

    /// Trains for whole epochs of `batches`.
    public func train<Source: BatchSource>(batches: inout Source, epochs: Int, reportEvery: Int = 50,
                                          progress: (TrainingProgress) -> Void = { _ in }) throws {
        try train(batches: &batches, steps: epochs * batches.batchesPerEpoch, reportEvery: reportEvery, progress: progress)
    }
}

/// Evaluation of a model on a labelled set (evaluation mode, no tape).
public enum ModelEvaluation {
    /// Mean cross-entropy (without smoothing) and top-1 accuracy over every image of `images`.
    public static func evaluate(_ model: TrainableModel, on images: any ImageDataset, batchSize: Int = 256,
                                threads: Int = 2) throws -> (loss: Float, accuracy: Float) {
        var lossSum: Double = 0, correct = 0, evaluated = 0
        var start = 0
        let criterion = SoftmaxCrossEntropy()
        while start < images.count {
            let batch = try images.loadBatch(Array(start..<min(start + batchSize, images.count)))
            start += batchSize
            let (pixels, labels, count) = (batch.pixels, batch.labels, batch.count)
            guard count > 0 else { continue }
            evaluated += count
            let context = ForwardContext(tape: nil, isTraining: false, threads: threads)
            let logits = try model(Tensor(shape: [count, images.channels, images.height, images.width], data: pixels), context: context)
            let (loss, right) = criterion(logits, labels: labels, context: context)
            lossSum += Double(loss.value.data[0]) * Double(count)
            correct += right
        }
        return (Float(lossSum / Double(max(1, evaluated))), Float(correct) / Float(max(1, evaluated)))
    }
}
