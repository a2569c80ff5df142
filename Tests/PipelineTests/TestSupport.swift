import Foundation
import XCTest
import Pipeline

/// Counts how often each test stage kind really ran (as opposed to being restored from the cache).
final class ExecutionLog: @unchecked Sendable {
    private let lock = NSLock()
    private var runs: [String] = []
    func record(_ name: String) { lock.lock(); runs.append(name); lock.unlock() }
    var names: [String] { lock.lock(); defer { lock.unlock() }; return runs }
    func reset() { lock.lock(); runs = []; lock.unlock() }
}

/// Test-only stage kinds. They exist only in this test target; the production registry never has them.
enum TestStages {
    static func registry(log: ExecutionLog, gate: DispatchSemaphore? = nil, rendezvous: Rendezvous? = nil) -> StageRegistry {
        StageRegistry([
            StageKind(name: "number", summary: "writes a number", parameters: [
                ParameterSpec("value", .double, help: "the number"),
                ParameterSpec("label", .string, default: .string(""), help: "free text"),
            ], inputs: .none) { context in
                log.record(context.stageID)
                let value = try context.double("value")
                try "\(value)".write(to: context.outputDirectory.appendingPathComponent("value.txt"), atomically: true, encoding: .utf8)
                return StageResult(artifacts: ["value": "value.txt"], metrics: ["value": .double(value)])
            },
            StageKind(name: "sum", summary: "adds upstream numbers", parameters: [
                ParameterSpec("add", .double, default: .double(0), help: "added to the sum"),
                ParameterSpec("mode", .choice(["plain", "double"]), default: .string("plain"), help: "double the result"),
            ], inputs: .any) { context in
                log.record(context.stageID)
                var total = try context.double("add")
                for input in context.inputs {
                    let text = try String(contentsOf: input.artifacts["value"]!, encoding: .utf8)
                    total += Double(text)!
                }
                if try context.string("mode") == "double" { total *= 2 }
                try "\(total)".write(to: context.outputDirectory.appendingPathComponent("sum.txt"), atomically: true, encoding: .utf8)
                return StageResult(artifacts: ["value": "sum.txt"], metrics: ["sum": .double(total)])
            },
            StageKind(name: "fail", summary: "always fails", parameters: [], inputs: .any) { context in
                log.record(context.stageID)
                try "partial".write(to: context.outputDirectory.appendingPathComponent("partial.txt"), atomically: true, encoding: .utf8)
                throw StageFailure("deliberate failure in \(context.stageID)")
            },
            StageKind(name: "gate", summary: "waits for the test to open the gate", parameters: [], inputs: .none) { context in
                log.record(context.stageID)
                _ = gate?.wait(timeout: .now() + 20)
                try "1".write(to: context.outputDirectory.appendingPathComponent("value.txt"), atomically: true, encoding: .utf8)
                return StageResult(artifacts: ["value": "value.txt"])
            },
            StageKind(name: "meet", summary: "succeeds only if another 'meet' stage runs at the same time", parameters: [
                ParameterSpec("value", .double, help: "the number"),
            ], inputs: .none) { context in
                log.record(context.stageID)
                guard rendezvous?.arriveAndWait(timeout: 2) == true else {
                    throw StageFailure("no other stage ran at the same time")
                }
                try "\(try context.double("value"))".write(to: context.outputDirectory.appendingPathComponent("v.txt"), atomically: true, encoding: .utf8)
                return StageResult(artifacts: ["value": "v.txt"])
            },
        ])
    }
}

/// Two parties meet: each waits until the other has arrived.
final class Rendezvous: @unchecked Sendable {
    private let condition = NSCondition()
    private var arrived = 0
    private let parties: Int
    init(parties: Int) { self.parties = parties }

    func arriveAndWait(timeout: TimeInterval) -> Bool {
        condition.lock(); defer { condition.unlock() }
        arrived += 1
        condition.broadcast()
        let deadline = Date().addingTimeInterval(timeout)
        while arrived < parties {
            if !condition.wait(until: deadline) { return false }
        }
        return true
    }
}

/// A temporary project directory with a manifest file in it.
final class TemporaryProject {
    let directory: URL
    var store: ArtifactStore { ArtifactStore(root: directory.appendingPathComponent(".qatflow")) }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-test-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    @discardableResult
    func write(_ text: String, to name: String = "pipeline.yaml") throws -> URL {
        let url = directory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func plan(_ text: String, registry: StageRegistry, overrides: [String] = []) throws -> Plan {
        let url = try write(text)
        let manifest = try ManifestParser.parse(contentsOf: url, displayName: "pipeline.yaml")
        return try Planner(registry: registry, projectDirectory: directory).plan(manifest, overrides: try overrides.map(Override.init(parsing:)))
    }

    func run(_ text: String, registry: StageRegistry, overrides: [String] = [], jobs: Int = 1, forced: Set<String> = []) throws -> RunRecord {
        let plan = try self.plan(text, registry: registry, overrides: overrides)
        return try Runner(plan: plan, store: store, options: RunOptions(jobs: jobs, forced: forced, quiet: true), print: { _ in }).run()
    }
}

extension TemporaryProject {
    /// A project with the PyTorch MobileNetV2-FMNIST at `models/m.onnx`.
    static func withWorkModel() throws -> TemporaryProject {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let project = try TemporaryProject()
        try FileManager.default.createDirectory(at: project.directory.appendingPathComponent("models"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: repository.appendingPathComponent("models/mobilenetv2-fmnist-pytorch.onnx"),
                                         to: project.directory.appendingPathComponent("models/m.onnx"))
        return project
    }
}

/// The diagnostics of a manifest that must fail, as printed.
func manifestErrors(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
    do {
        try body()
        XCTFail("expected a manifest error", file: file, line: line)
        return ""
    } catch {
        return String(describing: error)
    }
}

/// What one run of the built `qatflow` binary returned and printed.
struct QatflowOutcome { let status: Int32; let stdout: String; let stderr: String }

/// The `qatflow` executable `swift test` builds next to the test runner.
func qatflowBinary() throws -> URL {
    let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let candidates = [Bundle.main.bundleURL, Bundle.main.bundleURL.deletingLastPathComponent(), runner]
        .map { $0.appendingPathComponent("qatflow") }
    guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0.path) }) else {
        throw StageFailure("qatflow binary not found at \(candidates.map(\.path)); build it with `swift build -c release` or run `make test`")
    }
    return found
}

/// Runs the built binary in `directory` with `CI=1` (no progress lines) and waits for it.
func runQatflow(_ arguments: [String], in directory: URL) throws -> QatflowOutcome {
    let process = Process()
    process.executableURL = try qatflowBinary()
    process.arguments = arguments
    process.currentDirectoryURL = directory
    var environment = ProcessInfo.processInfo.environment
    environment["CI"] = "1"
    process.environment = environment
    let out = Pipe(), err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return QatflowOutcome(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
                          stderr: String(decoding: stderr, as: UTF8.self))
}
