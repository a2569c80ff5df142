import Foundation
import XCTest
import Pipeline

/// End-to-end tests of the `qatflow` binary built next to this test bundle: real manifests, the real converted
/// model, the real dataset, and `kill -9` in the middle of a stage.
final class CLITests: XCTestCase {
    /// `swift test` builds the executable product into the same directory as the test runner.
    var binary: URL { get throws { try qatflowBinary() } }

    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let model = repository.appendingPathComponent("models/mobilenetv2-fmnist-pytorch.onnx")

    typealias Outcome = QatflowOutcome

    func run(_ arguments: [String], in directory: URL) throws -> Outcome { try runQatflow(arguments, in: directory) }

    func project() throws -> TemporaryProject {
        let project = try TemporaryProject()
        try FileManager.default.createDirectory(at: project.directory.appendingPathComponent("models"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.model, to: project.directory.appendingPathComponent("models/m.onnx"))
        return project
    }

    func testBadManifestsPrintLocationsAndExitNonZero() throws {
        let project = try project()
        let cases: [(String, String)] = [
            ("stages:\n  convert: {uses: convert, wiht: {model: models/m.onnx}}\n", "bad.yaml:2:28: error: unknown key 'wiht'"),
            ("stages:\n  convert: {uses: convert, with: {model: models/m.onnx, for_training: maybe}}\n", "bad.yaml:2:71: error: stage 'convert', parameter 'for_training': expected true or false"),
            ("stages:\n  a: {uses: evaluate, needs: b}\n  b: {uses: evaluate, needs: a}\n", "bad.yaml:2:3: error: dependency cycle: a -> b -> a"),
            ("stages:\n  a: {uses: evaluate, needs: [convrt]}\n", "bad.yaml:2:31: error: stage 'a' needs 'convrt'"),
            ("stages:\n  a: {uses: qta}\n", "bad.yaml:2:13: error: unknown stage kind 'qta'"),
            ("stages:\n  convert: {uses: convert, with: {model: models/missing.onnx}}\n", "bad.yaml:2:42: error: stage 'convert', parameter 'model': file 'models/missing.onnx' does not exist"),
        ]
        for (text, expected) in cases {
            try project.write(text, to: "bad.yaml")
            let outcome = try run(["run", "bad.yaml"], in: project.directory)
            XCTAssertNotEqual(outcome.status, 0, text)
            XCTAssertTrue(outcome.stderr.contains(expected), "expected «\(expected)» in «\(outcome.stderr)»")
            XCTAssertFalse(FileManager.default.fileExists(atPath: project.directory.appendingPathComponent(".qatflow/runs").path), "a refused manifest does no work")
        }
    }

    func testPlainCommandsAndErrors() throws {
        let project = try project()
        let convert = try run(["convert", "models/m.onnx", "-o", "out/m.safetensors", "--for-training"], in: project.directory)
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let inspect = try run(["inspect", "out/m.safetensors"], in: project.directory)
        XCTAssertTrue(inspect.stdout.contains("0.70 M"), inspect.stdout)
        XCTAssertTrue(inspect.stdout.contains("27.7 M"), inspect.stdout)

        let truncated = project.directory.appendingPathComponent("models/truncated.onnx")
        try Data(try Data(contentsOf: Self.model).prefix(100_000)).write(to: truncated)
        let bad = try run(["convert", "models/truncated.onnx", "-o", "out/t.safetensors"], in: project.directory)
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.contains("truncated.onnx") && bad.stderr.contains("byte"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: project.directory.appendingPathComponent("out/t.safetensors").path))

        let brokenModel = project.directory.appendingPathComponent("out/broken.safetensors")
        try Data(try Data(contentsOf: project.directory.appendingPathComponent("out/m.safetensors")).prefix(5000)).write(to: brokenModel)
        let inspectBroken = try run(["inspect", "out/broken.safetensors"], in: project.directory)
        XCTAssertNotEqual(inspectBroken.status, 0)
        XCTAssertTrue(inspectBroken.stderr.contains("broken.safetensors") && inspectBroken.stderr.contains("byte"), inspectBroken.stderr)

        let badDataset = try run(["eval", "out/m.safetensors", "--dataset", "fashion-mnist:validation"], in: project.directory)
        XCTAssertNotEqual(badDataset.status, 0)
        XCTAssertTrue(badDataset.stderr.contains("validation"), badDataset.stderr)
    }

    /// `qatflow infer` on an NPY batch gives ONNX Runtime's logits (both files written and read by numpy).
    func testInferMatchesOnnxRuntime() throws {
        let project = try project()
        let interpreter = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? Self.repository.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: interpreter) else { return XCTFail("no Python venv at \(interpreter): run `make venv`") }
        func python(_ code: String) throws -> String {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: interpreter)
            process.arguments = ["-c", code]
            process.currentDirectoryURL = project.directory
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            XCTAssertEqual(process.terminationStatus, 0)
            return String(decoding: data, as: UTF8.self)
        }
        _ = try python("import numpy as np; np.save('x.npy', np.random.default_rng(1).standard_normal((3, 1, 32, 32)).astype(np.float32))")
        let infer = try run(["infer", "models/m.onnx", "--input", "x.npy", "--output", "y.npy"], in: project.directory)
        XCTAssertEqual(infer.status, 0, infer.stderr)
        let difference = try python("""
            import numpy as np, onnxruntime as ort
            x = np.load('x.npy'); y = np.load('y.npy')
            ref = ort.InferenceSession('models/m.onnx', providers=['CPUExecutionProvider']).run(None, {'input': x})[0]
            print(y.shape == ref.shape, float(np.abs(y - ref).max()))
            """)
        let parts = difference.split(separator: " ")
        XCTAssertEqual(parts.first, "True", difference)
        XCTAssertLessThanOrEqual(Double(parts.last!.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 1, 1e-4, difference)

        let wrongShape = try run(["infer", "models/m.onnx", "--input", "y.npy", "--output", "z.npy"], in: project.directory)
        XCTAssertNotEqual(wrongShape.status, 0)
        XCTAssertTrue(wrongShape.stderr.contains("y.npy") && wrongShape.stderr.contains("does not fit"), wrongShape.stderr)
    }

    func testEvalJSONMatchesOnnxRuntime() throws {
        let project = try project()
        let ours = try run(["eval", "models/m.onnx", "--images", "2000", "--json"], in: project.directory)
        XCTAssertEqual(ours.status, 0, ours.stderr)
        let json = try JSONDecoder().decode(JSONValue.self, from: Data(ours.stdout.utf8))
        let top1 = try XCTUnwrap(json.objectValue?["top1"]?.doubleValue)
        XCTAssertEqual(json.objectValue?["images"]?.intValue, 2000)
        XCTAssertNotNil(json.objectValue?["top5"]?.doubleValue)

        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? Self.repository.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else {
            return XCTFail("no Python venv at \(python): run `make venv`")
        }
        let script = Self.repository.appendingPathComponent("Tests/PipelineTests/Scripts/ort_eval.py")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [script.path, Self.model.path, "2000"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
        let ortTop1 = try XCTUnwrap(Double(String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)))
        XCTAssertEqual(top1, ortTop1, accuracy: 0.051, "ours \(top1) vs ONNX Runtime \(ortTop1) on the same 2,000 images")
    }

    /// `kill -9` while `evaluate` runs: finished stages stay cached, no object is corrupt, the re-run resumes.
    func testKilledRunResumesWithoutCorruption() throws {
        let project = try project()
        try project.write("""
            datasets:
              half: {source: fashion-mnist, split: test, limit: 5000}
            stages:
              convert: {uses: convert, with: {model: models/m.onnx}}
              evaluate: {uses: evaluate, needs: convert, with: {dataset: half, batch: 50}}
            """, to: "p.yaml")
        let process = Process()
        process.executableURL = try binary
        process.arguments = ["run", "p.yaml", "--quiet"]
        process.currentDirectoryURL = project.directory
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let store = project.store
        let deadline = Date().addingTimeInterval(120)
        // Wait until convert's record exists and evaluate is at work in its scratch directory.
        while Date() < deadline {
            let scratch = (try? FileManager.default.contentsOfDirectory(atPath: store.temporaryDirectory.path)) ?? []
            if store.allRecords().count == 1 && scratch.contains(where: { $0.contains("~evaluate-") }) { break }
            usleep(20_000)
        }
        usleep(300_000)
        XCTAssertTrue(process.isRunning, "evaluate finished before it could be killed")
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()

        XCTAssertEqual(store.allRecords().map(\.kind), ["convert"], "only the finished stage has a record")
        let objects = try FileManager.default.subpathsOfDirectory(atPath: store.objectsDirectory.path).filter { $0.count > 3 }
        for object in objects {
            let url = store.objectsDirectory.appendingPathComponent(object)
            XCTAssertEqual(try Digest.ofFile(at: url), url.lastPathComponent, "object \(object) is intact")
        }

        let rerun = try run(["run", "p.yaml"], in: project.directory)
        XCTAssertEqual(rerun.status, 0, rerun.stderr)
        let lines = rerun.stdout.split(separator: "\n")
        XCTAssertTrue(lines.contains { $0.contains("cached") && $0.contains("convert") }, rerun.stdout)
        XCTAssertTrue(lines.contains { $0.contains("ran") && $0.contains("evaluate") }, rerun.stdout)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.temporaryDirectory.path), [])
    }
}

struct CLITestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
