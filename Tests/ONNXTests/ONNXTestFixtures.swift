import Foundation
import XCTest

/// The generated test models and their ONNX Runtime reference outputs (see Scripts/make_models.py).
///
/// Built once per test process into a temporary directory: the models are cheap to make (under a second) and
/// keeping them out of git keeps the repository free of binary blobs that would drift from the script.
struct ONNXTestCases: Sendable {
    struct TensorFile: Decodable, Sendable {
        let name: String
        let shape: [Int]
        let file: String
    }

    struct Case: Decodable, Sendable {
        let name: String
        /// "model" (has reference outputs) or "error" (the importer must reject it).
        let kind: String
        let file: String
        let opset: Int
        let inputs: [TensorFile]
        let outputs: [TensorFile]
        let tags: [String]
        let expect: [String]?
    }

    private struct Manifest: Decodable {
        let cases: [Case]
    }

    let directory: URL
    let cases: [Case]

    var models: [Case] { cases.filter { $0.kind == "model" } }
    var errorModels: [Case] { cases.filter { $0.kind == "error" } }

    func named(_ name: String) throws -> Case {
        guard let found = cases.first(where: { $0.name == name }) else {
            throw FixtureError("no test case named \(name)")
        }
        return found
    }

    /// The shared fixture; a failure to build it (no venv, script error) is reported by every test that needs it.
    static func shared() throws -> ONNXTestCases {
        try sharedResult.get()
    }

    private static let sharedResult: Result<ONNXTestCases, FixtureError> = Result { () throws(FixtureError) in
        try build()
    }

    private static func build() throws(FixtureError) -> ONNXTestCases {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("qatflow-onnx-tests-\(ProcessInfo.processInfo.processIdentifier)")
        try? FileManager.default.removeItem(at: directory)
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw FixtureError("cannot create \(directory.path): \(error)")
        }
        // The real export is part of what must match ONNX Runtime, so a missing file fails rather than shrinks the suite.
        guard FileManager.default.fileExists(atPath: TestPaths.pytorchModel.path) else {
            throw FixtureError("\(TestPaths.pytorchModel.path) not found (set QATFLOW_PYTORCH_ONNX or QATFLOW_MODELS)")
        }
        try PythonScript.run(["build", directory.path, "--pytorch-model", TestPaths.pytorchModel.path])
        do {
            let data = try Data(contentsOf: directory.appendingPathComponent("manifest.json"))
            let manifest = try JSONDecoder().decode(Manifest.self, from: data)
            return ONNXTestCases(directory: directory, cases: manifest.cases)
        } catch {
            throw FixtureError("cannot read the manifest in \(directory.path): \(error)")
        }
    }
}

struct FixtureError: Error, CustomStringConvertible, Sendable {
    let description: String
    init(_ description: String) { self.description = description }
}

enum TestPaths {
    /// The repository root, found from this file's location (Tests/ONNXTests/<file>).
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = repositoryRoot.appendingPathComponent("Tests/ONNXTests/Scripts/make_models.py")
    /// The venv Python; `make test` passes QATFLOW_PYTHON.
    static let python = URL(fileURLWithPath: ProcessInfo.processInfo.environment["QATFLOW_PYTHON"]
        ?? repositoryRoot.appendingPathComponent(".venv/bin/python").path)
    /// The real PyTorch export: QATFLOW_PYTORCH_ONNX, else $QATFLOW_MODELS/, the repository's models/, or the
    /// shared models directory next to the checkout.
    static let pytorchModel: URL = {
        let fileName = "mobilenetv2-fmnist-pytorch.onnx"
        let environment = ProcessInfo.processInfo.environment
        var candidates = [repositoryRoot.appendingPathComponent("models/\(fileName)"),
                          repositoryRoot.deletingLastPathComponent().appendingPathComponent("shared/models/\(fileName)")]
        if let directory = environment["QATFLOW_MODELS"] {
            candidates.insert(URL(fileURLWithPath: directory).appendingPathComponent(fileName), at: 0)
        }
        if let file = environment["QATFLOW_PYTORCH_ONNX"] {
            candidates.insert(URL(fileURLWithPath: file), at: 0)
        }
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) } ?? candidates[0]
    }()
}

/// Runs Scripts/make_models.py with the project's venv Python (onnx, onnxruntime, numpy).
enum PythonScript {
    static func run(_ arguments: [String]) throws(FixtureError) {
        let python = TestPaths.python
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            throw FixtureError("the Python venv is missing (\(python.path)); run make venv")
        }
        let process = Process()
        process.executableURL = python
        process.arguments = [TestPaths.script.path] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        do {
            try process.run()
        } catch {
            throw FixtureError("cannot start \(python.path): \(error); run make venv")
        }
        // Read before waiting: a full pipe would otherwise block the script forever.
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let hint = text.contains("No module named") ? " (missing Python packages: run make venv)" : ""
            throw FixtureError("make_models.py \(arguments.joined(separator: " ")) failed with status \(process.terminationStatus)\(hint):\n\(text)")
        }
    }
}

/// Little-endian float32 files written by the script.
enum Float32File {
    static func read(_ url: URL) throws -> [Float] {
        let data = try Data(contentsOf: url)
        return data.withUnsafeBytes { buffer in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: buffer.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }
}

/// The largest |a − b|, or infinity when the sizes differ (so a shape bug cannot pass as a small difference).
func maxAbsoluteDifference(_ a: [Float], _ b: [Float]) -> Float {
    guard a.count == b.count else { return .infinity }
    var largest: Float = 0
    for (x, y) in zip(a, b) {
        let difference = abs(x - y)
        if difference.isNaN { return .nan }
        largest = max(largest, difference)
    }
    return largest
}
