import Datasets
import Foundation
import Pipeline
import XCTest

/// The `export` stage and `qatflow export` end to end: the PyTorch MobileNetV2-FMNIST is converted, quantized
/// (300 calibration images drawn from the first 2,000 training images) for ONNX Runtime on any x86 CPU (W7A8) and,
/// beside it, as plain W8A8, evaluated and exported; ONNX Runtime on the safe QDQ file must give our int8 engine's
/// top-1 on ≥ 99.9 % of the 10,000 Fashion-MNIST test images on every CPU, and the W8A8 file shows its loss on an
/// (emulated) AVX2 CPU.
final class ExportTests: XCTestCase {
    static let manifest = """
        datasets:
          calibration: {source: fashion-mnist, split: train, limit: 2000}
          test-500: {source: fashion-mnist, split: test, limit: 500}
        stages:
          convert: {uses: convert, with: {model: models/m.onnx}}
          quantize: {uses: quantize, needs: convert, with: {images: 300, dataset: calibration, target: onnxruntime-x86}}
          quantize-w8a8: {uses: quantize, needs: convert, with: {images: 300, dataset: calibration}}
          export-w8a8: {uses: export, needs: quantize-w8a8, outputs: {model: dist/m-w8a8.safetensors, onnx-qdq: dist/m-w8a8.onnx, model-card: dist/model-card-w8a8.json}}
          evaluate: {uses: evaluate, needs: [convert, quantize], with: {dataset: test-500}}
          export:
            uses: export
            needs: [quantize, evaluate]
            outputs: {model: dist/m.safetensors, onnx-qdq: dist/m.onnx, model-card: dist/model-card.json}
        """

    /// One pipeline run shared by the tests (it is the expensive part); failures to build it fail every test.
    struct Fixture: @unchecked Sendable {
        let project: TemporaryProject
        let record: RunRecord
        var dist: URL { project.directory.appendingPathComponent("dist") }
        func stage(_ id: String) throws -> StageRunRecord {
            guard let stage = record.stages.first(where: { $0.stage == id }) else { throw CLITestError("no stage '\(id)' in the run") }
            return stage
        }
    }

    nonisolated(unsafe) static var shared: Result<Fixture, Error>?

    static func fixture() throws -> Fixture {
        if let shared { return try shared.get() }
        let result = Result { () throws -> Fixture in
            guard FileManager.default.fileExists(atPath: CLITests.model.path) else { throw CLITestError("\(CLITests.model.path) is missing") }
            let project = try TemporaryProject()
            try FileManager.default.createDirectory(at: project.directory.appendingPathComponent("models"), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: CLITests.model, to: project.directory.appendingPathComponent("models/m.onnx"))
            let record = try project.run(manifest, registry: .production)
            return Fixture(project: project, record: record)
        }
        shared = result
        return try result.get()
    }

    override class func tearDown() {
        shared = nil
        super.tearDown()
    }

    func testModelCardRecordsBitsSettingsAccuracyPreprocessingSizesAndSourceDigest() throws {
        let fixture = try Self.fixture()
        let export = try fixture.stage("export")
        let quantize = try fixture.stage("quantize")
        let evaluate = try fixture.stage("evaluate")
        XCTAssertEqual(export.outcome, .ran)
        XCTAssertEqual(Set(export.outputs.keys), ["model", "onnx-qdq", "model-card"])
        let card = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: fixture.dist.appendingPathComponent("model-card.json")))
        func value(_ path: String) -> JSONValue? {
            path.split(separator: ".").reduce(Optional(card)) { current, key in
                if let index = Int(key) { return current?.arrayValue.flatMap { index < $0.count ? $0[index] : nil } }
                return current?.objectValue?[String(key)]
            }
        }
        XCTAssertEqual(value("bits.weights"), .int(7), "target onnxruntime-x86 with bits 8: 7-bit weights")
        XCTAssertEqual(value("bits.activations"), .int(8))
        XCTAssertTrue(value("scheme")?.stringValue?.contains("per-channel") == true, "\(String(describing: value("scheme")))")
        XCTAssertEqual(value("quantization.activation_method")?.stringValue, "mse")
        XCTAssertEqual(value("quantization.calibration_images"), .int(300))
        XCTAssertEqual(value("accuracy.0.stage")?.stringValue, "evaluate")
        XCTAssertEqual(value("accuracy.0.top1")?.doubleValue, evaluate.metrics["top1/quantize"]?.doubleValue)
        XCTAssertEqual(value("accuracy.0.agreement")?.doubleValue, evaluate.metrics["agreement/quantize"]?.doubleValue)
        XCTAssertEqual(value("accuracy.0.machine"), MachineRecord.current.json, "the CPU and kernel paths the accuracy was measured with")
        XCTAssertGreaterThan(evaluate.metrics["latency_ms_int8/quantize"]?.doubleValue ?? 0, 0, "evaluate times each model on its own engine")
        XCTAssertGreaterThan(evaluate.metrics["latency_ms_float/convert"]?.doubleValue ?? 0, 0)
        XCTAssertNil(value("accuracy.0.latency_ms_int8"), "timings stay out of the card, whose bytes must not vary between runs")
        XCTAssertEqual(value("accuracy.0.top1_of_other_models.convert")?.doubleValue, evaluate.metrics["top1/convert"]?.doubleValue)
        XCTAssertEqual(value("preprocessing.mean")?.doubleValue ?? 0, 0.2860, accuracy: 1e-9)
        XCTAssertEqual(value("preprocessing.std")?.doubleValue ?? 0, 0.3530, accuracy: 1e-9)
        XCTAssertEqual(value("preprocessing.pad"), .int(2))
        XCTAssertEqual(value("quantization.target")?.stringValue, "onnxruntime-x86")
        XCTAssertEqual(value("files.1.onnxruntime_x86.exact_without_vnni"), .bool(true))
        XCTAssertEqual(value("source.stage")?.stringValue, "quantize")
        XCTAssertEqual(value("source.sha256")?.stringValue, quantize.outputs["model"]?.digest, "the digest of the exported model's source file")
        XCTAssertEqual(value("source.original_onnx")?.stringValue, "m.onnx")
        for (index, artifact) in [(0, "model"), (1, "onnx-qdq")] {
            let written = fixture.dist.appendingPathComponent(artifact == "model" ? "m.safetensors" : "m.onnx")
            let size = try XCTUnwrap(FileManager.default.attributesOfItem(atPath: written.path)[.size] as? Int)
            XCTAssertEqual(value("files.\(index).artifact")?.stringValue, artifact)
            XCTAssertEqual(value("files.\(index).bytes"), .int(size))
            XCTAssertEqual(value("files.\(index).sha256")?.stringValue, try Digest.ofFile(at: written))
        }
        let qdqBytes = try XCTUnwrap(export.metrics["bytes/onnx-qdq"]?.intValue)
        let ratio = try XCTUnwrap(export.metrics["size_ratio/onnx-qdq"]?.doubleValue)
        XCTAssertLessThan(ratio, 0.4, "int8 weights: well under half of float32")
        XCTAssertEqual(export.metrics["top1"]?.doubleValue, evaluate.metrics["top1/quantize"]?.doubleValue)
        print("export sizes: qatflow \(export.metrics["bytes/qatflow"]?.intValue ?? 0) B, onnx-qdq \(qdqBytes) B, float32 reference \(export.metrics["float_reference_bytes"]?.intValue ?? 0) B (ratio \(ratio))")
    }

    /// The acceptance test of issue #7: ORT on the exported QDQ model vs our int8 engine on the same file's source.
    func testOnnxRuntimeOnExportedQDQAgreesWithInt8EngineOnTenThousandImages() throws {
        let fixture = try Self.fixture()
        let ort = try Self.ortPredictions(fixture.dist.appendingPathComponent("m.onnx"), images: 10_000)
        XCTAssertGreaterThan(ort.ops["QuantizeLinear"] ?? 0, 50, "a QDQ model: \(ort.ops)")

        let graph = try ModelLoader.load(fixture.dist.appendingPathComponent("m.safetensors"))
        let data = try DatasetLoader.load(try DatasetSpec(shorthand: "fashion-mnist:test"), projectDirectory: CLITests.repository)
        var ours: [Int] = []
        let metrics = try Evaluator.evaluate(graph, on: data, batch: 100, engine: .int8, progress: ProgressReporter(prefix: "int8", quiet: true),
                                             label: "exported", onPrediction: { ours.append($0) })
        XCTAssertEqual(ours.count, 10_000)
        XCTAssertEqual(ort.predictions.count, 10_000)
        let agreeing = zip(ours, ort.predictions).filter { $0 == $1 }.count
        let agreement = 100 * Double(agreeing) / Double(max(ours.count, 1))
        print(String(format: "ORT (exported QDQ) vs Int8Executor: top-1 agreement %.2f %% (%d of %d images differ); top-1 ORT %.2f %%, ours %.2f %%",
                     agreement, ours.count - agreeing, ours.count, ort.top1, metrics.top1))
        XCTAssertGreaterThanOrEqual(agreement, 99.9)
        XCTAssertEqual(ort.top1, metrics.top1, accuracy: 0.2)
    }

    /// issue #17: the plain W8A8 export is flagged (stage warning, model card) and, run by ONNX Runtime on an
    /// emulated AVX2-only CPU, loses accuracy; the `target: onnxruntime-x86` export gives our int8 engine's top-1
    /// there. Natively, the W8A8 file agrees wherever this machine's ORT is exact (VNNI) and shows the loss where not.
    func testSaturatingExportIsFlaggedAndLosesAccuracyOnAVX2WhileTheSafeOneAgrees() throws {
        let fixture = try Self.fixture()
        let saturating = try fixture.stage("export-w8a8"), safe = try fixture.stage("export")
        let warning = StageResult.warnings(in: saturating.metrics).first ?? ""
        for fragment in ["stage 'quantize-w8a8'", "8-bit weights with 8-bit activations", "without VNNI", "target: onnxruntime-x86"] {
            XCTAssertTrue(warning.contains(fragment), "«\(fragment)» in «\(warning)»")
        }
        XCTAssertGreaterThan(saturating.metrics["onnxruntime_x86_saturating_layers"]?.intValue ?? 0, 50)
        XCTAssertEqual(StageResult.warnings(in: safe.metrics), [])
        XCTAssertEqual(safe.metrics["onnxruntime_x86_saturating_layers"], .int(0))
        let card = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: fixture.dist.appendingPathComponent("model-card-w8a8.json")))
        let qdqEntry = card.objectValue?["files"]?.arrayValue?.first { $0.objectValue?["format"]?.stringValue == "onnx-qdq" }
        XCTAssertEqual(qdqEntry?.objectValue?["onnxruntime_x86"]?.objectValue?["exact_without_vnni"], .bool(false))

        let images = 1_000
        var spec = try DatasetSpec(shorthand: "fashion-mnist:test")
        spec.limit = images
        let data = try DatasetLoader.load(spec, projectDirectory: CLITests.repository)
        func ours(_ model: URL) throws -> (predictions: [Int], top1: Double) {
            var predictions: [Int] = []
            let metrics = try Evaluator.evaluate(try ModelLoader.load(model), on: data, batch: 100, engine: .int8, progress: ProgressReporter(prefix: "int8", quiet: true),
                                                 label: "exported", onPrediction: { predictions.append($0) })
            return (predictions, metrics.top1)
        }
        func agreement(_ a: [Int], _ b: [Int]) -> Double { 100 * Double(zip(a, b).filter { $0 == $1 }.count) / Double(max(a.count, 1)) }
        let safeOurs = try ours(fixture.dist.appendingPathComponent("m.safetensors"))
        let saturatingOurs = try ours(fixture.dist.appendingPathComponent("m-w8a8.safetensors"))

        let safeAVX2 = try Self.ortPredictions(fixture.dist.appendingPathComponent("m.onnx"), images: images, emulatedAVX2: true)
        let saturatingAVX2 = try Self.ortPredictions(fixture.dist.appendingPathComponent("m-w8a8.onnx"), images: images, emulatedAVX2: true)
        print(String(format: "emulated AVX2 ORT on %d images: W7A8 (target onnxruntime-x86) top-1 %.2f %% vs ours %.2f %%, agreement %.2f %%; W8A8 top-1 %.2f %% vs ours %.2f %%, agreement %.2f %%",
                     images, safeAVX2.top1, safeOurs.top1, agreement(safeAVX2.predictions, safeOurs.predictions),
                     saturatingAVX2.top1, saturatingOurs.top1, agreement(saturatingAVX2.predictions, saturatingOurs.predictions)))
        // 1,000 images here, where one image is 0.1 pt; the 10,000-image test above holds the 99.9 % bar natively.
        XCTAssertGreaterThanOrEqual(agreement(safeAVX2.predictions, safeOurs.predictions), 99.8)
        XCTAssertEqual(safeAVX2.top1, safeOurs.top1, accuracy: 0.1)
        XCTAssertLessThan(agreement(saturatingAVX2.predictions, saturatingOurs.predictions), 99.0, "the saturation shows")
        XCTAssertLessThan(saturatingAVX2.top1, saturatingOurs.top1 - 0.5, "and costs accuracy")

        let native = try Self.ortPredictions(fixture.dist.appendingPathComponent("m-w8a8.onnx"), images: images)
        let nativeAgreement = agreement(native.predictions, saturatingOurs.predictions)
        print(String(format: "this CPU's ORT on the W8A8 file: top-1 %.2f %%, agreement %.2f %%", native.top1, nativeAgreement))
        if try Self.ortSaturatesOnThisCPU() {
            XCTAssertLessThan(nativeAgreement, 99.0)
        } else {
            XCTAssertGreaterThanOrEqual(nativeAgreement, 99.9)
        }
    }

    func testPlainCommandWritesFilesAndRefusesBadInputWithOneLineErrors() throws {
        let fixture = try Self.fixture()
        let directory = fixture.project.directory
        let qdq = try Self.qatflow(["export", "dist/m.safetensors", "-o", "cli/m.onnx", "--card", "cli/card.json"], in: directory)
        XCTAssertEqual(qdq.status, 0, qdq.stderr)
        XCTAssertTrue(qdq.stdout.contains("onnx-qdq"), qdq.stdout)
        XCTAssertEqual(try Digest.ofFile(at: directory.appendingPathComponent("cli/m.onnx")), try Digest.ofFile(at: fixture.dist.appendingPathComponent("m.onnx")),
                       "the plain command and the stage write the same bytes")
        let card = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: directory.appendingPathComponent("cli/card.json")))
        XCTAssertEqual(card.objectValue?["source"]?.objectValue?["file"]?.stringValue, "m.safetensors")

        let float = try Self.qatflow(["export", "models/m.onnx", "-o", "cli/float.onnx"], in: directory)
        XCTAssertEqual(float.status, 0, float.stderr)
        XCTAssertTrue(float.stdout.contains("(onnx,"), float.stdout)
        let floatFile = try Self.qatflow(["export", "models/m.onnx", "--format", "qatflow", "-o", "cli/float.safetensors"], in: directory)
        XCTAssertEqual(floatFile.status, 0, floatFile.stderr)

        let truncated = directory.appendingPathComponent("cli/truncated.safetensors")
        try Data(try Data(contentsOf: fixture.dist.appendingPathComponent("m.safetensors")).prefix(4000)).write(to: truncated)
        let cases: [([String], String, [String])] = [
            (["export", "dist/m.safetensors", "--format", "onnx-qd", "-o", "bad/a.onnx"], "bad/a.onnx", ["m.safetensors", "unknown format 'onnx-qd'", "qatflow, onnx-qdq, onnx"]),
            (["export", "cli/truncated.safetensors", "--format", "onnx-qdq", "-o", "bad/b.onnx"], "bad/b.onnx", ["truncated.safetensors", "byte"]),
            (["export", "models/m.onnx", "--format", "onnx-qdq", "-o", "bad/c.onnx"], "bad/c.onnx", ["models/m.onnx is a float model", "onnx-qdq needs a quantized model"]),
            (["export", "dist/m.safetensors", "--format", "onnx", "-o", "bad/d.onnx"], "bad/d.onnx", ["dist/m.safetensors is a quantized (QDQ) model", "export it as onnx-qdq"]),
            (["export", "dist/m.safetensors", "-o", "bad/e.bin"], "bad/e.bin", ["e.bin", "--format"]),
        ]
        for (arguments, output, expected) in cases {
            let outcome = try Self.qatflow(arguments, in: directory)
            XCTAssertNotEqual(outcome.status, 0, "\(arguments)")
            let message = outcome.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
            XCTAssertEqual(message.split(separator: "\n").count, 1, "one line: «\(message)»")
            for fragment in expected { XCTAssertTrue(message.contains(fragment), "expected «\(fragment)» in «\(message)»") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: directory.appendingPathComponent(output).path), "nothing written for \(arguments)")
            print("qatflow \(arguments.joined(separator: " ")) → \(message)")
        }
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: directory.appendingPathComponent("bad").path)) ?? []
        XCTAssertEqual(leftovers, [], "no temporary files either")
    }

    func testManifestMistakesAreRefusedWithTheReason() throws {
        let fixture = try Self.fixture()
        let project = fixture.project
        let cases: [(String, String)] = [
            ("  export: {uses: export, needs: [convert, quantize]}\n", "exports exactly one model; its upstream stages with a model: 'convert', 'quantize'"),
            ("  export: {uses: export, needs: convert, with: {formats: [onnx-qdq]}}\n", "is a float model"),
            ("  export: {uses: export, needs: quantize, with: {formats: [qatflow, onxx]}}\n", "unknown format 'onxx' in formats; expected qatflow, onnx-qdq, onnx (did you mean 'onnx'?)"),
            ("  export: {uses: export, needs: quantize, with: {opset: 11}}\n", "opset 11 is not supported"),
            ("  q8: {uses: quantize, needs: convert, with: {target: onnxruntime-x86, weight_bits: 8}}\n",
             "8-bit weights with 8-bit activations can saturate ONNX Runtime's int8 kernels on x86 CPUs without VNNI"),
        ]
        let base = Self.manifest.components(separatedBy: "  export:\n")[0]
        for (stage, expected) in cases {
            do {
                _ = try project.run(base + stage, registry: .production)
                XCTFail("expected a failure for \(stage)")
            } catch {
                XCTAssertTrue("\(error)".contains(expected), "expected «\(expected)» in «\(error)»")
            }
        }
        // A float model exports as qatflow + float ONNX by default.
        let record = try project.run(base + "  export: {uses: export, needs: convert, outputs: {onnx: dist/float.onnx}}\n", registry: .production)
        let export = try XCTUnwrap(record.stages.first { $0.stage == "export" })
        XCTAssertEqual(Set(export.outputs.keys), ["model", "onnx", "model-card"])
        XCTAssertEqual(export.metrics["formats"], .array([.string("qatflow"), .string("onnx")]))
        XCTAssertEqual(export.metrics["size_ratio/qatflow"]?.doubleValue ?? 0, 1, accuracy: 0.05, "a float export is about its float source's size")
    }

    // MARK: - The binary and ONNX Runtime

    /// Runs the `qatflow` binary `swift test` built next to the test bundle.
    static func qatflow(_ arguments: [String], in directory: URL) throws -> QatflowOutcome { try runQatflow(arguments, in: directory) }

    struct ORTPredictions: Decodable {
        let images: Int
        let top1: Double
        let predictions: [Int]
        let ops: [String: Int]
    }

    static func ortPredictions(_ model: URL, images: Int, emulatedAVX2: Bool = false) throws -> ORTPredictions {
        let script = CLITests.repository.appendingPathComponent("Tests/PipelineTests/Scripts/ort_predictions.py")
        let stdout = try python([script.path, model.path, String(images),
                                 CLITests.repository.appendingPathComponent("datasets/fashion-mnist").path,
                                 DatasetLoader.systemDatasetsDirectory + "/fashion-mnist"], emulatedAVX2: emulatedAVX2)
        return try JSONDecoder().decode(ORTPredictions.self, from: stdout)
    }

    /// scripts/ort_saturation_probe.py: whether this machine's ORT adds u8×s8 pairs into saturating int16.
    static func ortSaturatesOnThisCPU() throws -> Bool {
        let script = CLITests.repository.appendingPathComponent("scripts/ort_saturation_probe.py")
        let probe = try JSONDecoder().decode(JSONValue.self, from: try python([script.path], emulatedAVX2: false))
        guard let saturates = probe.objectValue?["saturates"], case .bool(let value) = saturates else { throw CLITestError("probe printed \(probe)") }
        return value
    }

    /// The venv's Python, natively or through scripts/avx2-emulated (QEMU). Without QEMU the emulated run is
    /// skipped with the reason, except in CI (CI=true), whose .ci/run installs it.
    static func python(_ arguments: [String], emulatedAVX2: Bool) throws -> Data {
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? CLITests.repository.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else { throw CLITestError("no Python venv at \(python): run `make venv`") }
        let process = Process()
        if emulatedAVX2 {
            process.executableURL = CLITests.repository.appendingPathComponent("scripts/avx2-emulated")
            process.arguments = [python] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: python)
            process.arguments = arguments
        }
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if emulatedAVX2 && process.terminationStatus == 3 && ProcessInfo.processInfo.environment["CI"] != "true" {
            throw XCTSkip("no emulated AVX2 CPU here: \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard process.terminationStatus == 0 else {
            throw CLITestError("\(URL(fileURLWithPath: arguments[0]).lastPathComponent)\(emulatedAVX2 ? " (emulated AVX2)" : "") failed (status \(process.terminationStatus)): \(stderr)")
        }
        return stdout
    }
}
