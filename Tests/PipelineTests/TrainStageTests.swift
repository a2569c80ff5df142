import Foundation
import Pipeline
import Graph
import Tensor
import Training
import XCTest

/// The `train` stage on real Fashion-MNIST subsets: it learns, a killed run resumes exactly, a diverging run
/// stops with a message and keeps its checkpoint, bad parameters are manifest errors with locations; and
/// `evaluate` reports per-class accuracy and the confusion matrix.
final class TrainStageTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    // MARK: - Learning

    /// A few epochs on 640 images take MobileNetV2 far above chance (10 %); the evaluate stage downstream
    /// sees the same model the stage validated, and reports per-class accuracy and a confusion matrix.
    func testShortRunLearnsAndEvaluateReportsPerClassAndConfusion() throws {
        let project = try TemporaryProject()
        let record = try project.run("""
            datasets:
              train-640: {source: fashion-mnist, split: train, limit: 640}
              test-300: {source: fashion-mnist, split: test, limit: 300}
            stages:
              train:
                uses: train
                with: {builder: mobilenetv2-fmnist, width: 0.25, epochs: 3, batch: 32, lr: 0.05, schedule: cosine,
                       nesterov: true, label_smoothing: 0.05, dataset: train-640, validation: test-300, seed: 3}
              evaluate: {uses: evaluate, needs: train, with: {dataset: test-300}}
            """, registry: .production)
        let train = try XCTUnwrap(record.stages.first { $0.stage == "train" })
        let metrics = train.metrics
        let top1 = try XCTUnwrap(metrics["validation_top1"]?.doubleValue)
        let history = try XCTUnwrap(metrics["history"]?.arrayValue)
        print("train: 3 epochs on 640 images: validation top-1 \(top1) %, \(metrics["images_per_second"]!) img/s, history \(history)")
        XCTAssertGreaterThan(top1, 40, "validation top-1 after 60 steps (chance is 10 %)")
        XCTAssertEqual(metrics["epochs"]?.intValue, 3)
        XCTAssertEqual(metrics["steps"]?.intValue, 60)
        XCTAssertEqual(history.count, 3)
        let losses = history.compactMap { $0.objectValue?["loss"]?.doubleValue }
        XCTAssertLessThan(losses[2], losses[0], "training loss falls: \(losses)")
        XCTAssertGreaterThan(metrics["images_per_second"]?.doubleValue ?? 0, 0)
        XCTAssertNil(metrics["resumed_from_epoch"], "a fresh run resumes nothing")
        XCTAssertFalse(FileManager.default.fileExists(atPath: project.store.checkpointDirectory(forKey: train.key!).path),
                       "the checkpoint folder goes once the stage's record is stored")

        // The artifact is the model that was validated: the float executor agrees with the training engine.
        let evaluate = try XCTUnwrap(record.stages.first { $0.stage == "evaluate" }).metrics
        let evaluated = try XCTUnwrap(evaluate["top1/train"]?.doubleValue)
        XCTAssertEqual(evaluated, top1, accuracy: 1.01, "evaluate \(evaluated) % vs the stage's validation \(top1) % on the same 300 images")
        try assertConsistentPerClassAndConfusion(evaluate, stage: "train", images: 300)
    }

    /// Per-class accuracy and confusion matrix for a float and a quantized model; the existing metric names stay.
    func testEvaluateReportsPerClassAndConfusionForFloatAndQuantizedModels() throws {
        let project = try TemporaryProject()
        try FileManager.default.createDirectory(at: project.directory.appendingPathComponent("models"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.repository.appendingPathComponent("models/mobilenetv2-fmnist-pytorch.onnx"),
                                         to: project.directory.appendingPathComponent("models/m.onnx"))
        let record = try project.run("""
            datasets:
              test-200: {source: fashion-mnist, split: test, limit: 200}
            stages:
              convert: {uses: convert, with: {model: models/m.onnx}}
              quantize: {uses: quantize, needs: convert, with: {method: max, images: 64, batch: 32}}
              evaluate: {uses: evaluate, needs: [convert, quantize], with: {dataset: test-200}}
            """, registry: .production)
        let metrics = try XCTUnwrap(record.stages.first { $0.stage == "evaluate" }).metrics
        for stage in ["convert", "quantize"] {
            XCTAssertNotNil(metrics["top5/\(stage)"]?.doubleValue)
            try assertConsistentPerClassAndConfusion(metrics, stage: stage, images: 200)
            XCTAssertGreaterThan(metrics["top1/\(stage)"]?.doubleValue ?? 0, 80, "the reference model is a trained model")
        }
        XCTAssertNotNil(metrics["agreement/quantize"]?.doubleValue)
    }

    /// Per-class accuracy is the confusion matrix's diagonal over its rows, top-1 its trace over all images.
    func assertConsistentPerClassAndConfusion(_ metrics: [String: JSONValue], stage: String, images: Int,
                                              file: StaticString = #filePath, line: UInt = #line) throws {
        let perClass = try XCTUnwrap(metrics["per_class/\(stage)"]?.arrayValue?.compactMap(\.doubleValue), file: file, line: line)
        let confusion = try XCTUnwrap(metrics["confusion/\(stage)"]?.arrayValue?.map { try XCTUnwrap($0.arrayValue?.compactMap(\.intValue)) },
                                      file: file, line: line)
        XCTAssertEqual(perClass.count, 10, file: file, line: line)
        XCTAssertEqual(confusion.count, 10, file: file, line: line)
        XCTAssertTrue(confusion.allSatisfy { $0.count == 10 }, file: file, line: line)
        XCTAssertEqual(confusion.joined().reduce(0, +), images, file: file, line: line)
        for label in 0..<10 {
            let row = confusion[label].reduce(0, +)
            XCTAssertEqual(perClass[label], row == 0 ? 0 : 100 * Double(confusion[label][label]) / Double(row), accuracy: 1e-9, file: file, line: line)
        }
        let trace = (0..<10).map { confusion[$0][$0] }.reduce(0, +)
        XCTAssertEqual(metrics["top1/\(stage)"]?.doubleValue ?? -1, 100 * Double(trace) / Double(images), accuracy: 1e-9, file: file, line: line)
    }

    // MARK: - Resume

    static let resumableManifest = """
        datasets:
          train-256: {source: fashion-mnist, split: train, limit: 256}
        stages:
          train:
            uses: train
            with: {builder: mobilenetv2-fmnist, width: 0.25, epochs: 3, batch: 32, optimizer: adamw, lr: 0.003,
                   schedule: cosine, warmup_steps: 4, augment: crop_flip, dataset: train-256, seed: 5}
        """

    /// `kill -9` after the first epoch's checkpoint: the re-run says it resumes from epoch 1, trains only epochs
    /// 2–3, and ends with exactly the model of a run that was never interrupted (same digest).
    func testKilledRunResumesFromItsLastCheckpointExactly() throws {
        let project = try TemporaryProject()
        try project.write(Self.resumableManifest, to: "p.yaml")
        let process = Process()
        process.executableURL = try qatflowBinary()
        process.arguments = ["run", "p.yaml"]
        process.currentDirectoryURL = project.directory
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let checkpoints = project.store.checkpointsDirectory
        let deadline = Date().addingTimeInterval(120)
        var firstCheckpoint: String?
        while Date() < deadline, process.isRunning, firstCheckpoint == nil {
            let files = (try? FileManager.default.subpathsOfDirectory(atPath: checkpoints.path)) ?? []
            firstCheckpoint = files.first { $0.hasSuffix("/epoch-0001.safetensors") }
            if firstCheckpoint == nil { usleep(5_000) }
        }
        XCTAssertTrue(process.isRunning, "the run ended before it could be killed after epoch 1")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        let checkpoint = try XCTUnwrap(firstCheckpoint, "no checkpoint after epoch 1 in \(checkpoints.path)")
        XCTAssertTrue(project.store.allRecords().isEmpty, "a killed stage has no record")

        let rerun = try runQatflow(["run", "p.yaml"], in: project.directory)
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        XCTAssertTrue(rerun.stdout.contains("train: resuming from the checkpoint of epoch 1/3 (step 8/24)"), rerun.stdout)
        XCTAssertTrue(rerun.stdout.contains(checkpoint), "the resume line names the checkpoint file: \(rerun.stdout)")
        XCTAssertFalse(rerun.stdout.contains("epoch 1/3:"), "epoch 1 is not trained again: \(rerun.stdout)")
        XCTAssertTrue(rerun.stdout.contains("epoch 2/3:") && rerun.stdout.contains("epoch 3/3:"), rerun.stdout)
        XCTAssertTrue(rerun.stdout.contains("resumed_from_epoch=1"), rerun.stdout)
        let resumed = try XCTUnwrap(project.store.allRecords().first { $0.kind == "train" })
        XCTAssertFalse(FileManager.default.fileExists(atPath: project.store.checkpointDirectory(forKey: resumed.key).path))

        let uninterrupted = try TemporaryProject()
        let record = try uninterrupted.run(Self.resumableManifest, registry: .production)
        let reference = try XCTUnwrap(record.stages.first?.outputs["model"])
        XCTAssertEqual(record.stages.first?.key, resumed.key)
        XCTAssertEqual(resumed.outputs["model"]?.digest, reference.digest,
                       "the resumed run ends with the uninterrupted run's model, byte for byte")
    }

    /// Optimizer state survives a checkpoint: restored into fresh parameters (same names), the next steps are
    /// the same as without the interruption, for SGD's momentum and Adam's moments and step count.
    func testOptimizerStateRoundTripsByParameterName() throws {
        func parameters() -> [Parameter] {
            [Parameter(name: "w", role: .weight, value: .init(shape: [3], data: [0.5, -1, 2])),
             Parameter(name: "b", role: .bias, value: .init(shape: [2], data: [0.1, 0.2]))]
        }
        func step(_ optimizer: Optimizer, _ parameters: [Parameter], _ index: Int) {
            for parameter in parameters {
                parameter.gradient = (0..<parameter.count).map { Float($0 + index) * 0.3 - 0.4 }
            }
            optimizer.step(parameters, learningRate: 0.1)
        }
        let makers: [() -> CheckpointableOptimizer] = [
            { SGD(momentum: 0.9, nesterov: true, weightDecay: 1e-3) }, { Adam.adamW(weightDecay: 0.01) },
        ]
        for make in makers {
            let original = make(), continuous = parameters()
            for index in 0..<3 { step(original, continuous, index) }
            let state = original.exportState(for: continuous)
            let restored = make(), reloaded = parameters()
            for (target, source) in zip(reloaded, continuous) { target.value = source.value }
            try restored.restoreState(state, for: reloaded)
            for index in 3..<5 {
                step(original, continuous, index)
                step(restored, reloaded, index)
            }
            for (a, b) in zip(continuous, reloaded) { XCTAssertEqual(a.value.data, b.value.data, "\(type(of: original)) \(a.name)") }
            XCTAssertThrowsError(try make().restoreState(state, for: [Parameter(name: "w", role: .weight, value: .init(shape: [1], data: [0]))]))
        }
    }

    /// `qatflow gc` removes checkpoint folders of stages that have a record and keeps those a re-run resumes from.
    func testGarbageCollectorRemovesOnlyFinishedStagesCheckpoints() throws {
        let project = try TemporaryProject()
        let record = try project.run("stages:\n  a: {uses: number, with: {value: 1}}\n", registry: TestStages.registry(log: ExecutionLog()))
        let finishedKey = try XCTUnwrap(record.stages.first?.key)
        let store = project.store
        for key in [finishedKey, "unfinished-run"] {
            let folder = store.checkpointDirectory(forKey: key)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try Data(repeating: 7, count: 100).write(to: folder.appendingPathComponent("epoch-0001.safetensors"))
        }
        let dryRun = try GarbageCollector(store: store).collect(dryRun: true)
        XCTAssertEqual(dryRun.removedCheckpointFolders, 1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: store.checkpointDirectory(forKey: finishedKey).path), "a dry run removes nothing")
        let result = try GarbageCollector(store: store).collect()
        XCTAssertEqual(result.removedCheckpointFolders, 1)
        XCTAssertEqual(result.removedCheckpointBytes, 100)
        XCTAssertEqual(result.keptCheckpointFolders, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: store.checkpointDirectory(forKey: finishedKey).path))
        XCTAssertTrue(FileManager.default.fileExists(atPath: store.checkpointDirectory(forKey: "unfinished-run").path))
    }

    // MARK: - Divergence

    /// A learning rate that jumps ×10,000 after epoch 1 makes epoch 2 diverge: the run fails (non-zero exit)
    /// naming stage, step, epoch and learning rate; the epoch-1 checkpoint is kept; the cache holds nothing of it.
    func testDivergenceStopsWithAClearMessageAndKeepsTheLastCheckpoint() throws {
        let project = try TemporaryProject()
        try project.write("""
            datasets:
              train-128: {source: fashion-mnist, split: train, limit: 128}
            stages:
              train:
                uses: train
                with: {builder: mobilenetv2-fmnist, width: 0.25, epochs: 3, batch: 32, lr: 0.05,
                       schedule: step, step_size: 1, gamma: 10000, dataset: train-128}
            """, to: "p.yaml")
        let outcome = try runQatflow(["run", "p.yaml"], in: project.directory)
        XCTAssertNotEqual(outcome.status, 0)
        let message = outcome.stdout + outcome.stderr
        XCTAssertTrue(message.contains("stage 'train': training diverged at step "), message)
        XCTAssertTrue(message.contains("(epoch 2/3, learning rate 500)"), message)
        let kept = try XCTUnwrap(message.range(of: "The last good checkpoint is kept: epoch 1, "), message)
        let path = String(message[kept.upperBound...].prefix { $0 != " " && $0 != "\n" }.dropLast())  // drop the period
        XCTAssertTrue(path.hasSuffix("/epoch-0001.safetensors"), path)
        let graph = try ModelLoader.load(URL(fileURLWithPath: path))
        XCTAssertTrue(graph.initializers.keys.contains { $0.hasPrefix("optimizer/momentum/") }, "the checkpoint holds the optimizer state")

        let store = project.store
        XCTAssertTrue(store.allRecords().isEmpty, "no record for a diverged stage")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.temporaryDirectory.path), [])
        XCTAssertEqual((try? FileManager.default.subpathsOfDirectory(atPath: store.objectsDirectory.path)) ?? [], [], "no object stored")

        // The plain command fails the same way and writes no model.
        let plain = try runQatflow(["train", "--builder", "mobilenetv2-fmnist", "--width", "0.25", "--images", "128", "--batch", "32",
                                    "--epochs", "3", "--lr", "0.05", "--schedule", "step", "--step-size", "1", "--gamma", "10000",
                                    "--checkpoint-dir", "ck", "-o", "out/m.safetensors"], in: project.directory)
        XCTAssertNotEqual(plain.status, 0)
        XCTAssertTrue(plain.stderr.contains("(epoch 2/3, learning rate 500)") && plain.stderr.contains("/ck/"), plain.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: project.directory.appendingPathComponent("out/m.safetensors").path))
    }

    // MARK: - Parameter errors

    func testBadParametersAreManifestErrorsAtTheirLocation() throws {
        let project = try TemporaryProject()
        let registry = StageRegistry.production
        func errors(_ stage: String, overrides: [String] = []) -> String {
            manifestErrors { _ = try project.plan("stages:\n" + stage, registry: registry, overrides: overrides) }
        }
        let both = errors("  train:\n    uses: train\n    with: {builder: mobilenetv2-fmnist, epochs: 2,\n           steps: 100}\n")
        XCTAssertTrue(both.contains("pipeline.yaml:5:19: error: stage 'train', parameter 'steps': give either 'epochs' or 'steps', not both"), both)

        let neither = errors("  train: {uses: train, with: {builder: mobilenetv2-fmnist}}\n")
        XCTAssertTrue(neither.contains("pipeline.yaml:2:3: error: stage 'train': how long to train is missing"), neither)

        let nothing = errors("  train: {uses: train, with: {epochs: 1}}\n")
        XCTAssertTrue(nothing.contains("pipeline.yaml:2:3: error: stage 'train': nothing to train"), nothing)

        let stepWithout = errors("  train: {uses: train, with: {builder: mobilenetv2-fmnist, epochs: 1, schedule: step, lr: -1}}\n")
        XCTAssertTrue(stepWithout.contains("pipeline.yaml:2:81: error: stage 'train', parameter 'schedule': schedule 'step' needs 'step_size'"), stepWithout)
        XCTAssertTrue(stepWithout.contains("pipeline.yaml:2:91: error: stage 'train', parameter 'lr': must be a positive number, got -1"), stepWithout)

        let builder = errors("  train: {uses: train, with: {builder: resnet, epochs: 1}}\n")
        XCTAssertTrue(builder.contains("pipeline.yaml:2:40: error: stage 'train', parameter 'builder': 'resnet' is not one of mobilenetv2-fmnist"), builder)

        let builderAndNeeds = errors("""
              convert: {uses: convert, with: {model: pipeline.yaml}}
              train: {uses: train, needs: convert, with: {builder: mobilenetv2-fmnist, steps: 5, nesterov: true, optimizer: adam}}

            """)
        XCTAssertTrue(builderAndNeeds.contains("pipeline.yaml:3:56: error: stage 'train', parameter 'builder': a builder makes a fresh model"), builderAndNeeds)
        XCTAssertTrue(builderAndNeeds.contains("parameter 'nesterov': applies to optimizer sgd only"), builderAndNeeds)

        let overridden = errors("  train: {uses: train, with: {builder: mobilenetv2-fmnist, epochs: 1}}\n", overrides: ["train.steps=10"])
        XCTAssertTrue(overridden.contains("pipeline.yaml:2:3: error: stage 'train', parameter 'steps': give either 'epochs' or 'steps', not both (from --set)"), overridden)

        // Valid parameters plan, with the optional ones left unset (null) entering the key without a dataset or file.
        let plan = try project.plan("stages:\n  train: {uses: train, with: {builder: mobilenetv2-fmnist, steps: 10}}\n", registry: registry)
        XCTAssertEqual(plan.instances.first?.parameters["validation"], .null)
        let statuses = try PlanPreview(plan: plan, store: project.store).statuses()
        if case .willRun = statuses.first?.status {} else { XCTFail("expected the stage to run: \(String(describing: statuses.first?.status))") }
    }

}
