import Datasets
import Foundation
import Pipeline
import XCTest

/// The `qat` stage in a real pipeline (the PyTorch MobileNetV2-FMNIST, Fashion-MNIST subsets): it produces a
/// quantized model the int8 engine evaluates, changing its bits re-runs only it and what follows, and its
/// parameter mistakes are manifest errors at their location.
final class QATStageTests: XCTestCase {
    static let manifest = """
        datasets:
          train-512: {source: fashion-mnist, split: train, limit: 512}
          test-500: {source: fashion-mnist, split: test, limit: 500}
        stages:
          convert: {uses: convert, with: {model: models/m.onnx, for_training: true}}
          quantize: {uses: quantize, needs: convert, with: {images: 128, dataset: train-512}}
          qat: {uses: qat, needs: convert, with: {bits: 8, steps: 8, batch: 32, init_images: 128, dataset: train-512}}
          evaluate: {uses: evaluate, needs: [convert, quantize, qat], with: {dataset: test-500}}
          export: {uses: export, needs: [qat, evaluate]}
        """

    func makeProject() throws -> TemporaryProject { try TemporaryProject.withWorkModel() }

    func testQATModelRunsOnTheInt8EngineAndABitsChangeRerunsOnlyWhatFollows() throws {
        let project = try makeProject()
        let record = try project.run(Self.manifest, registry: .production)
        XCTAssertTrue(record.stages.allSatisfy { $0.outcome == .ran }, "\(record.stages.map { ($0.stage, $0.outcome) })")
        let qat = try XCTUnwrap(record.stages.first { $0.stage == "qat" }).metrics
        XCTAssertEqual(qat["steps"]?.intValue, 8)
        XCTAssertEqual(qat["fake_quantized_layers"]?.intValue, 53, "52 convolutions (BN folded) and the classifier")
        let evaluate = try XCTUnwrap(record.stages.first { $0.stage == "evaluate" }).metrics
        let float = try XCTUnwrap(evaluate["top1/convert"]?.doubleValue), int8 = try XCTUnwrap(evaluate["top1/qat"]?.doubleValue)
        let agreement = try XCTUnwrap(evaluate["agreement/qat"]?.doubleValue)
        print("qat, 8 steps on 512 images, 500 test images: float \(float) %, QAT int8 \(int8) %, agreement \(agreement) %")
        XCTAssertGreaterThanOrEqual(int8, float - 1.0, "8 steps at lr 1e-4 keep the float accuracy")
        XCTAssertGreaterThanOrEqual(agreement, 99.0)
        let export = try XCTUnwrap(record.stages.first { $0.stage == "export" }).metrics
        XCTAssertLessThanOrEqual(export["size_ratio/qatflow"]?.doubleValue ?? 1, 0.3)

        // Editing qat's bits: convert and quantize stay cached; qat, evaluate and export run again.
        let plan = try project.plan(Self.manifest, registry: .production, overrides: ["qat.bits=4"])
        let statuses = try PlanPreview(plan: plan, store: project.store).statuses()
        func status(_ name: String) -> String {
            switch statuses.first(where: { $0.instance.name == name })?.status {
            case .cached?: return "cached"
            case .willRun?: return "run"
            case .pending?: return "pending"
            case nil: return "missing"
            }
        }
        XCTAssertEqual(["convert", "quantize", "qat", "evaluate", "export"].map(status), ["cached", "cached", "run", "pending", "pending"])
    }

    func testBadParametersAreManifestErrorsAtTheirLocation() throws {
        let project = try makeProject()
        func errors(_ with: String) -> String {
            manifestErrors {
                _ = try project.plan("""
                    stages:
                      convert: {uses: convert, with: {model: models/m.onnx, for_training: true}}
                      qat:
                        uses: qat
                        needs: convert
                        with: {\(with)}
                    """, registry: .production)
            }
        }
        let both = errors("steps: 10, epochs: 1")
        XCTAssertTrue(both.contains("pipeline.yaml:6:31: error: stage 'qat', parameter 'epochs': give either 'steps' or 'epochs', not both"), both)
        let perChannel = errors("feature_scale: per_channel")
        XCTAssertTrue(perChannel.contains("pipeline.yaml:6:27: error: stage 'qat', parameter 'feature_scale': per_channel is not supported"), perChannel)
        let bits = errors("bits: 9")
        XCTAssertTrue(bits.contains("parameter 'bits': must be between 2 and 8, got 9"), bits)
        let smoothing = errors("label_smoothing: 1.0")
        XCTAssertTrue(smoothing.contains("parameter 'label_smoothing': must be in [0, 1), got 1.0"), smoothing)
        let update = errors("scale_update: lsq")
        XCTAssertTrue(update.contains("scale_update"), update)
    }

    /// A model whose BN was folded at conversion cannot be trained with BN folding: the plan is refused before
    /// anything runs, at the qat stage's line:column, with what to change.
    func testFoldedModelIsRefusedWithAdvice() throws {
        let project = try makeProject()
        XCTAssertThrowsError(try project.run("""
            datasets:
              train-64: {source: fashion-mnist, split: train, limit: 64}
            stages:
              convert: {uses: convert, with: {model: models/m.onnx}}
              qat: {uses: qat, needs: convert, with: {steps: 1, init_images: 32, dataset: train-64}}
            """, registry: .production)) { error in
            XCTAssertTrue("\(error)".contains("pipeline.yaml:5:3: error: stage 'qat': QAT needs the model's BatchNormalization nodes, but stage 'convert' folds BN"), "\(error)")
            XCTAssertTrue("\(error)".contains("set for_training: true on 'convert'"), "\(error)")
        }
        XCTAssertTrue(project.store.allRecords().isEmpty, "nothing ran, nothing cached")
    }

    /// `qatflow qat model.onnx -o out` needs no convert step (the ONNX file is imported with BN kept) and trains on an
    /// image folder given on the command line; the file it writes runs on the int8 engine.
    func testPlainCommandTrainsAnONNXFileDirectlyFromAnImageFolder() throws {
        let project = try makeProject()
        // 64 training images as PNG class folders, written from the IDX files by our own test script.
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? CLITests.repository.appendingPathComponent(".venv/bin/python").path
        let idx = try DatasetLoader.locateFiles(for: try DatasetSpec(shorthand: "fashion-mnist:test"), projectDirectory: CLITests.repository).images.deletingLastPathComponent()
        let writer = Process()
        writer.executableURL = URL(fileURLWithPath: python)
        writer.arguments = [CLITests.repository.appendingPathComponent("Tests/DatasetsTests/Scripts/write_images.py").path, "folder", idx.path,
                            project.directory.appendingPathComponent("train").path, "64"]
        try writer.run()
        writer.waitUntilExit()
        XCTAssertEqual(writer.terminationStatus, 0)
        let outcome = try runQatflow(["qat", "models/m.onnx", "-o", "out/q.safetensors", "--dataset", "train", "--channels", "gray", "--pad", "2",
                                      "--mean", "0.2860", "--std", "0.3530", "--steps", "2", "--batch", "8", "--init-images", "32", "--quiet"], in: project.directory)
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        let graph = try ModelLoader.load(project.directory.appendingPathComponent("out/q.safetensors"))
        XCTAssertTrue(Evaluator.isQuantized(graph))
        let bad = try runQatflow(["qat", "models/m.onnx", "-o", "out/r.safetensors", "--dataset", "train", "--steps", "1"], in: project.directory)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("takes N×1×32×32 images, but the dataset gives N×3×28×28"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: project.directory.appendingPathComponent("out/r.safetensors").path))
    }
}
