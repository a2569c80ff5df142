import Foundation
import Datasets
import Training

/// The epochs of one `train` run, from a fresh model or from a checkpoint: steps with progress, validation and a
/// checkpoint at each epoch's end, divergence turned into a message that says what was kept.
///
/// Each epoch gets its own `Trainer` and batch stream, seeded from (seed, epoch), and the schedule is shifted to
/// the global step: an epoch computes the same thing whether the run started at epoch 1 or resumed before it.
struct TrainingLoop {
    private let context: StageContext
    private let recipe: TrainingRecipe
    private let shape: RunShape
    private let schedule: LearningRateSchedule
    private let model: TrainableModel
    private let optimizer: CheckpointableOptimizer
    private let data: any ImageDataset
    private let validation: (any ImageDataset)?
    private let augmentation: Augmentation
    private let folder: CheckpointFolder
    private let fingerprint: String
    private let resumedFromEpoch: Int?
    /// When the stage started (data loading included), for `wall_seconds`.
    private let started: Date

    private var history: [EpochSummary]
    /// Global optimizer steps and epochs finished.
    private var step: Int
    private var epoch: Int
    private var firstLoss: Float?
    private var lastCheckpoint: (epoch: Int, url: URL)?
    /// Images trained and seconds spent in training steps by this process (not by the run it resumed).
    private var sessionImages = 0
    private var sessionSeconds = 0.0

    init(context: StageContext, recipe: TrainingRecipe, shape: RunShape, schedule: LearningRateSchedule,
         model: TrainableModel, optimizer: CheckpointableOptimizer, data: any ImageDataset, blackPixel: Float,
         validation: (any ImageDataset)?, folder: CheckpointFolder, fingerprint: String,
         resumed: (checkpoint: TrainingCheckpoint, file: URL)?, started: Date) {
        self.context = context
        self.started = started
        self.recipe = recipe
        self.shape = shape
        self.schedule = schedule
        self.model = model
        self.optimizer = optimizer
        self.data = data
        self.validation = validation
        self.augmentation = recipe.augmentation(fillValue: blackPixel)
        self.folder = folder
        self.fingerprint = fingerprint
        let progress = resumed?.checkpoint.progress
        resumedFromEpoch = progress?.epoch
        history = progress?.history ?? []
        step = progress?.step ?? 0
        epoch = progress?.epoch ?? 0
        firstLoss = progress?.firstLoss
        lastCheckpoint = resumed.map { ($0.checkpoint.progress.epoch, $0.file) }
    }

    mutating func run() throws {
        let remaining = shape.totalSteps - step
        guard remaining > 0 else {
            context.log("all \(shape.epochs) epochs were already trained; writing the model")
            return
        }
        context.progress.begin("images", total: remaining * recipe.batch)
        defer { context.progress.finish() }
        while epoch < shape.epochs { try runEpoch() }
    }

    /// Independent seeds for epoch `epoch`'s batches (shuffle, augmentation) and its trainer (Dropout).
    static func epochSeeds(_ seed: UInt64, epoch: Int) -> (batches: UInt64, trainer: UInt64) {
        var random = SeededRandom(seed: seed).derived(0x7EA1 &+ UInt64(epoch))
        return (random.next(), random.next())
    }

    private mutating func runEpoch() throws {
        let steps = shape.steps(inEpoch: epoch)
        let seeds = Self.epochSeeds(recipe.seed, epoch: epoch)
        let trainer = Trainer(model: model, optimizer: optimizer, schedule: ShiftedSchedule(base: schedule, offset: step),
                              loss: SoftmaxCrossEntropy(labelSmoothing: Float(recipe.labelSmoothing)),
                              threads: recipe.threads, seed: seeds.trainer)
        trainer.gradientClipNorm = recipe.clipGradientNorm.map { Float($0) }
        // The trainer's relative check would compare with its own first step, which for a later epoch is not the
        // run's; the run-wide check is done below instead (NaN/∞ checks stay with the trainer).
        trainer.divergenceFactor = .infinity
        let batches = PrefetchingBatches(ShuffledBatches(data, batchSize: recipe.batch, augmentation: augmentation,
                                                         seed: seeds.batches))
        var lossSum = 0.0, correct = 0, seen = 0, done = 0
        var learningRate: Float = 0
        let epochStart = Date()
        for _ in 0..<steps {
            let result: StepResult
            do {
                result = try trainer.trainStep(batches.next())
            } catch let diverged as TrainingDivergedError {
                throw divergence(diverged.reason, loss: diverged.loss, learningRate: diverged.learningRate)
            }
            if let firstLoss, result.loss > TrainStage.divergenceFactor * max(firstLoss, 1e-3) {
                throw divergence("the loss exceeds \(Int(TrainStage.divergenceFactor))× the run's first loss (\(firstLoss))",
                                 loss: result.loss, learningRate: result.learningRate)
            }
            if firstLoss == nil { firstLoss = result.loss }
            step += 1
            done += 1
            lossSum += Double(result.loss)
            correct += result.correct
            seen += result.count
            learningRate = result.learningRate
            context.progress.advance(by: result.count, status: String(
                format: "epoch %d/%d loss %.4f acc %.1f%% lr %.4g", epoch + 1, shape.epochs,
                lossSum / Double(done), 100 * Double(correct) / Double(max(1, seen)), learningRate))
        }
        let seconds = Date().timeIntervalSince(epochStart)
        sessionImages += seen
        sessionSeconds += seconds
        var summary = EpochSummary(epoch: epoch + 1, steps: steps, loss: lossSum / Double(max(1, steps)),
                                   accuracy: 100 * Double(correct) / Double(max(1, seen)), learningRate: Double(learningRate),
                                   validationTop1: nil, validationLoss: nil, seconds: seconds,
                                   imagesPerSecond: seconds > 0 ? Double(seen) / seconds : 0)
        if let validation {
            let result = try ModelEvaluation.evaluate(model, on: validation, batchSize: 250, threads: recipe.threads)
            // The accuracy is a Float ratio; keep the percentage free of Float-to-Double noise (71.33333086967468).
            summary.validationTop1 = (100 * Double(result.accuracy) * 1e4).rounded() / 1e4
            summary.validationLoss = Double(result.loss)
        }
        history.append(summary)
        epoch += 1
        let checkpoint = TrainingCheckpoint(
            progress: .init(epoch: epoch, step: step, firstLoss: firstLoss ?? 0, parameters: fingerprint, history: history),
            model: model.exportGraph(), optimizer: optimizer.exportState(for: model.parameters))
        lastCheckpoint = (epoch, try folder.save(checkpoint))
        context.progress.finish()
        context.log(Self.describe(summary, of: shape.epochs))
    }

    static func describe(_ summary: EpochSummary, of epochs: Int) -> String {
        var line = String(format: "epoch %d/%d: loss %.4f, accuracy %.2f %%", summary.epoch, epochs, summary.loss, summary.accuracy)
        if let top1 = summary.validationTop1, let loss = summary.validationLoss {
            line += String(format: ", validation top-1 %.2f %% (loss %.4f)", top1, loss)
        }
        line += String(format: ", lr %.4g, %.0f img/s, %.1f s; checkpoint saved", summary.learningRate, summary.imagesPerSecond, summary.seconds)
        return line
    }

    /// The failure a diverged step becomes: where it happened and what is kept.
    private func divergence(_ reason: String, loss: Float, learningRate: Float) -> StageFailure {
        context.progress.finish()
        let kept = lastCheckpoint.map { "The last good checkpoint is kept: epoch \($0.epoch), \($0.url.path)." }
            ?? "No checkpoint is kept: the run diverged before finishing its first epoch."
        return StageFailure("stage '\(context.stageID)': training diverged at step \(step + 1)/\(shape.totalSteps) "
            + "(epoch \(epoch + 1)/\(shape.epochs), learning rate \(String(format: "%.4g", learningRate))): \(reason) (loss \(loss)). "
            + "Training stopped; no model was written or cached. \(kept) "
            + "Lower 'lr', add 'warmup_steps' or set 'clip_grad_norm'.")
    }

    func metrics(parameterCount: Int) -> [String: JSONValue] {
        var metrics: [String: JSONValue] = [
            "epochs": .int(shape.epochs),
            "steps": .int(shape.totalSteps),
            "parameters": .int(parameterCount),
            "wall_seconds": .double(Date().timeIntervalSince(started)),
            "history": .array(history.map(\.json)),
        ]
        if let last = history.last {
            metrics["train_loss"] = .double(last.loss)
            metrics["train_accuracy"] = .double(last.accuracy)
            if let top1 = last.validationTop1 { metrics["validation_top1"] = .double(top1) }
            if let loss = last.validationLoss { metrics["validation_loss"] = .double(loss) }
        }
        // This process's throughput; a run resumed after its last epoch reports the run's.
        let images = sessionImages > 0 ? Double(sessionImages) : history.reduce(0) { $0 + $1.imagesPerSecond * $1.seconds }
        let seconds = sessionImages > 0 ? sessionSeconds : history.reduce(0) { $0 + $1.seconds }
        metrics["images_per_second"] = .double(seconds > 0 ? images / seconds : 0)
        if let resumedFromEpoch { metrics["resumed_from_epoch"] = .int(resumedFromEpoch) }
        return metrics
    }
}
