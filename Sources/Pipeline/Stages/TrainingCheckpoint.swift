import Foundation
import Graph
import Training

/// What one finished epoch looked like; checkpoints carry the history so a resumed run reports every epoch.
struct EpochSummary: Codable, Sendable {
    /// 1-based.
    var epoch: Int
    var steps: Int
    /// Mean training loss and accuracy (percent) over the epoch's steps.
    var loss: Double
    var accuracy: Double
    /// The learning rate of the epoch's last step.
    var learningRate: Double
    /// Percent, on the `validation` dataset (nil without one).
    var validationTop1: Double?
    var validationLoss: Double?
    /// Training time of the epoch (without validation and checkpointing).
    var seconds: Double
    var imagesPerSecond: Double

    var json: JSONValue {
        var members: [String: JSONValue] = [
            "epoch": .int(epoch), "steps": .int(steps), "loss": .double(loss), "accuracy": .double(accuracy),
            "lr": .double(learningRate), "seconds": .double(seconds), "images_per_second": .double(imagesPerSecond),
        ]
        if let validationTop1 { members["validation_top1"] = .double(validationTop1) }
        if let validationLoss { members["validation_loss"] = .double(validationLoss) }
        return .object(members)
    }
}

/// Training state at the end of an epoch: the model (weights and BN statistics), the optimizer's buffers, and
/// the counters that place the run in its schedule. Shuffling, augmentation and Dropout of each epoch are
/// derived from (seed, epoch), so continuing from here reproduces the uninterrupted run.
struct TrainingCheckpoint {
    struct Progress: Codable, Sendable {
        /// Epochs finished.
        var epoch: Int
        /// Optimizer steps finished (global).
        var step: Int
        /// The run's first loss: the divergence check's reference, which must not reset on resume.
        var firstLoss: Float
        /// Canonical JSON of the stage parameters the run started with; a checkpoint is used only by the same run.
        var parameters: String
        var history: [EpochSummary]
    }

    var progress: Progress
    /// The model as `TrainableModel.exportGraph()` writes it.
    var model: Graph
    var optimizer: OptimizerState

    /// One qatflow model file: the model's graph and tensors, plus the optimizer buffers as extra tensors
    /// (`optimizer/<slot>/<parameter>`, read by no node) and the progress as JSON in the metadata. One file means
    /// one atomic rename, and the checkpoint opens with every tool that opens a model file.
    static let progressKey = "qatflow.checkpoint"
    static let optimizerPrefix = "optimizer/"
    static let optimizerStepsKey = "qatflow.checkpoint.optimizer_steps"

    func encodedGraph() throws -> Graph {
        var graph = model
        for (slot, buffers) in optimizer.slots {
            for (parameter, values) in buffers {
                let name = Self.optimizerPrefix + slot + "/" + parameter
                graph.initializers[name] = Initializer(name: name, shape: [values.count], storage: .float32(values))
            }
        }
        graph.metadata[Self.progressKey] = String(decoding: try JSONEncoder().encode(progress), as: UTF8.self)
        graph.metadata[Self.optimizerStepsKey] = String(optimizer.stepCount)
        return graph
    }

    init(progress: Progress, model: Graph, optimizer: OptimizerState) {
        self.progress = progress
        self.model = model
        self.optimizer = optimizer
    }

    /// Splits a checkpoint file's graph back into model, optimizer state and progress.
    init(decoding graph: Graph, file: URL) throws {
        guard let text = graph.metadata[Self.progressKey],
              let progress = try? JSONDecoder().decode(Progress.self, from: Data(text.utf8)) else {
            throw StageFailure("\(file.path): a model file, but not a training checkpoint (no readable '\(Self.progressKey)' metadata)")
        }
        var model = graph
        var optimizer = OptimizerState(stepCount: Int(graph.metadata[Self.optimizerStepsKey] ?? "") ?? 0)
        for (name, initializer) in graph.initializers where name.hasPrefix(Self.optimizerPrefix) {
            let rest = name.dropFirst(Self.optimizerPrefix.count)
            guard let slash = rest.firstIndex(of: "/"), case .float32(let values) = initializer.storage else {
                throw StageFailure("\(file.path): optimizer tensor '\(name)' is not optimizer/<slot>/<parameter> in float32")
            }
            optimizer.slots[String(rest[..<slash]), default: [:]][String(rest[rest.index(after: slash)...])] = values
            model.initializers[name] = nil
        }
        model.metadata[Self.progressKey] = nil
        model.metadata[Self.optimizerStepsKey] = nil
        self.init(progress: progress, model: model, optimizer: optimizer)
    }
}

/// The folder of one training run's checkpoints: `epoch-0003.safetensors`, only the newest kept.
struct CheckpointFolder {
    let directory: URL

    func file(forEpoch epoch: Int) -> URL {
        directory.appendingPathComponent(String(format: "epoch-%04d.safetensors", epoch))
    }

    /// Checkpoint files, newest epoch first.
    private func checkpointFiles() -> [(epoch: Int, url: URL)] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.compactMap { name -> (Int, URL)? in
            guard name.hasPrefix("epoch-"), name.hasSuffix(".safetensors"),
                  let epoch = Int(name.dropFirst("epoch-".count).dropLast(".safetensors".count)) else { return nil }
            return (epoch, directory.appendingPathComponent(name))
        }.sorted { $0.0 > $1.0 }
    }

    /// The newest checkpoint that this run (same parameters) wrote. Temporary files of a killed write are
    /// deleted; checkpoints from other parameters are deleted too, with a note, because they would shadow this
    /// run's own epochs.
    func latest(parameters: String, log: (String) -> Void) -> (checkpoint: TrainingCheckpoint, file: URL)? {
        let fm = FileManager.default
        for name in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? [] where name.hasPrefix(".") && name.hasSuffix(".tmp") {
            try? fm.removeItem(at: directory.appendingPathComponent(name))
        }
        for (_, url) in checkpointFiles() {
            do {
                let checkpoint = try TrainingCheckpoint(decoding: try ModelFile.read(url), file: url)
                if checkpoint.progress.parameters == parameters { return (checkpoint, url) }
                log("ignoring checkpoint \(url.path): it was made with other parameters")
            } catch {
                log("ignoring unreadable checkpoint \(url.path): \(error)")
            }
            try? fm.removeItem(at: url)
        }
        return nil
    }

    /// Writes the checkpoint atomically (temp file + rename), then deletes older epochs.
    func save(_ checkpoint: TrainingCheckpoint) throws -> URL {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let url = file(forEpoch: checkpoint.progress.epoch)
        try ModelFile.write(try checkpoint.encodedGraph(), to: url)
        for (epoch, older) in checkpointFiles() where epoch < checkpoint.progress.epoch {
            try? FileManager.default.removeItem(at: older)
        }
        return url
    }
}
