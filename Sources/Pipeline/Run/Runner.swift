import Foundation
import Datasets

public struct RunOptions: Sendable {
    public var jobs: Int
    /// Stage ids or instance names to run even if cached.
    public var forced: Set<String>
    public var quiet: Bool
    public var overrides: [String]

    public init(jobs: Int = 1, forced: Set<String> = [], quiet: Bool = false, overrides: [String] = []) {
        self.jobs = max(1, jobs)
        self.forced = forced
        self.quiet = quiet
        self.overrides = overrides
    }
}

/// A run that finished with failed stages; the run record was still written.
public struct RunFailure: Error, CustomStringConvertible {
    public let record: RunRecord
    public var description: String {
        let failed = record.stages.filter { $0.outcome == .failed }
        return failed.map { "stage '\($0.instance)' failed: \($0.error ?? "unknown error")" }.joined(separator: "\n")
            + "\nrun \(record.id): \(record.summary)"
    }
}

/// Executes a plan against the cache: each instance whose key has a usable record is restored, the others run,
/// independent ones in parallel up to `jobs`. A failure stops the failed stage's dependents; other branches finish.
public final class Runner: @unchecked Sendable {
    private let plan: Plan
    private let store: ArtifactStore
    private let options: RunOptions
    private let print: @Sendable (String) -> Void
    private let keys: StageKeyBuilder

    /// State shared with worker threads; guarded by `condition`.
    private let condition = NSCondition()
    private var finished: [String: StageRunRecord] = [:]
    private var producedOutputs: [String: [String: ArtifactReference]] = [:]
    private var dispatched = Set<String>()
    private var running = 0
    private var completedCount = 0

    public init(plan: Plan, store: ArtifactStore, options: RunOptions, print: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.store = store
        self.options = options
        self.print = print
        self.keys = StageKeyBuilder(plan: plan)
    }

    /// Runs the plan while holding the cache lock; writes and returns the run record.
    @discardableResult
    public func run() throws -> RunRecord {
        try store.prepare()
        let lock = try FileLock(url: store.lockFile, onWait: print)
        defer { lock.unlock() }
        try store.clearTemporaryFiles()

        let started = Date()
        let runID = Self.makeRunID(started)
        schedule()
        let stages = plan.instances.map { finished[$0.name]! }
        let record = RunRecord(id: runID, manifest: plan.manifest.file, name: plan.manifest.name, started: started.iso8601,
                               seconds: Date().timeIntervalSince(started), jobs: options.jobs, overrides: options.overrides,
                               succeeded: !stages.contains { $0.outcome == .failed || $0.outcome == .skipped },
                               stages: stages, engineVersion: QatflowVersion.string, machine: .current)
        let runDirectory = store.runsDirectory.appendingPathComponent(runID)
        try store.writeJSON(record, to: runDirectory.appendingPathComponent("run.json"))
        // The report is derived from the record: failing to write it must not turn a finished run into a failed one.
        do {
            try RunReport(run: record).write(to: runDirectory)
        } catch {
            print("warning: run \(runID): report not written: \(error)")
        }
        if !record.succeeded { throw RunFailure(record: record) }
        return record
    }

    // MARK: - Scheduling

    private func schedule() {
        condition.lock()
        defer { condition.unlock() }
        while finished.count < plan.instances.count {
            var launched = false
            for instance in plan.instances where finished[instance.name] == nil && !dispatched.contains(instance.name) {
                let upstream = instance.needs.map { finished[$0] }
                if let broken = upstream.compactMap({ $0 }).first(where: { $0.outcome == .failed || $0.outcome == .skipped }) {
                    complete(StageRunRecord(instance: instance.name, stage: instance.stageID, kind: instance.kind.name,
                                            outcome: .skipped, key: nil, seconds: 0, parameters: instance.parameters,
                                            matrix: matrixObject(instance), outputs: [:], metrics: [:],
                                            error: "not run: '\(broken.instance)' \(broken.outcome == .failed ? "failed" : "was not run")"))
                    launched = true
                    continue
                }
                guard upstream.allSatisfy({ $0 != nil }), running < options.jobs else { continue }
                dispatched.insert(instance.name)
                running += 1
                launched = true
                let inputs = instance.needs.map { ($0, producedOutputs[$0]!) }
                DispatchQueue.global().async {
                    let result = self.execute(instance, inputs: inputs)
                    self.condition.lock()
                    self.running -= 1
                    self.complete(result)
                    self.condition.signal()
                    self.condition.unlock()
                }
            }
            if !launched && finished.count < plan.instances.count { condition.wait() }
        }
    }

    /// Called with `condition` locked.
    private func complete(_ result: StageRunRecord) {
        finished[result.instance] = result
        producedOutputs[result.instance] = result.outputs
        completedCount += 1
        if !options.quiet || result.outcome == .failed {
            print(Self.describe(result, index: completedCount, total: plan.instances.count))
        }
    }

    // MARK: - One instance

    private func execute(_ instance: StageInstance, inputs: [(String, [String: ArtifactReference])]) -> StageRunRecord {
        let clock = Date()
        var key: String?
        func record(_ outcome: StageOutcome, outputs: [String: ArtifactReference] = [:], metrics: [String: JSONValue] = [:], error: String? = nil,
                    machine: MachineRecord? = nil) -> StageRunRecord {
            StageRunRecord(instance: instance.name, stage: instance.stageID, kind: instance.kind.name, outcome: outcome,
                           key: key, seconds: Date().timeIntervalSince(clock), parameters: instance.parameters,
                           matrix: matrixObject(instance), outputs: outputs, metrics: metrics, error: error, machine: machine)
        }
        do {
            let inputDigests = Dictionary(uniqueKeysWithValues: inputs.map { ($0.0, $0.1.mapValues(\.digest)) })
            let stageKey = try keys.key(for: instance, inputs: inputs.map { $0.1.mapValues(\.digest) })
            key = stageKey
            let forced = options.forced.contains(instance.stageID) || options.forced.contains(instance.name)
            if !forced, let cached = store.usableRecord(forKey: stageKey) {
                try restoreOutputs(of: instance, cached.outputs)
                return record(.cached, outputs: cached.outputs, metrics: cached.metrics, machine: cached.machine)
            }
            if !options.quiet { print("      → running \(instance.name) (key \(stageKey.prefix(10)))") }
            let scratch = try store.makeScratchDirectory(prefix: instance.name)
            defer { try? FileManager.default.removeItem(at: scratch) }
            let output = scratch.appendingPathComponent("out")
            try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
            let context = StageContext(
                stageID: instance.name, parameters: instance.parameters,
                inputs: instance.needs.enumerated().map { index, need in
                    StageInput(stageID: need, kind: plan.instance(named: need)!.kind.name,
                               artifacts: inputs[index].1.mapValues { store.objectURL($0.digest) },
                               metrics: finishedMetrics(need))
                },
                outputDirectory: output, projectDirectory: plan.projectDirectory, datasets: plan.datasets,
                progress: ProgressReporter(prefix: instance.name, quiet: options.quiet),
                checkpointDirectory: store.checkpointDirectory(forKey: stageKey),
                log: { [print = self.print, quiet = options.quiet, name = instance.name] message in
                    if !quiet { print("      \(name): \(message)") }
                })
            let result = try instance.kind.run(context)
            var stored: [String: ArtifactReference] = [:]
            for (name, fileName) in result.artifacts.sorted(by: { $0.key < $1.key }) {
                let file = output.appendingPathComponent(fileName)
                guard FileManager.default.fileExists(atPath: file.path) else {
                    throw StageFailure("stage kind '\(instance.kind.name)' reported artifact '\(name)' at \(fileName) but did not write it")
                }
                let (digest, size) = try store.storeObject(movingFrom: file)
                stored[name] = ArtifactReference(digest: digest, size: size, fileName: (fileName as NSString).lastPathComponent)
            }
            let seconds = Date().timeIntervalSince(clock)
            try store.write(StageRecord(key: stageKey, kind: instance.kind.name, instance: instance.name,
                                        parameters: instance.parameters, inputs: inputDigests, outputs: stored,
                                        metrics: result.metrics, created: Date().iso8601, seconds: seconds,
                                        engineVersion: QatflowVersion.string, machine: .current))
            store.removeCheckpoints(forKey: stageKey)
            try restoreOutputs(of: instance, stored)
            return record(.ran, outputs: stored, metrics: result.metrics, machine: .current)
        } catch {
            return record(.failed, error: String(describing: error))
        }
    }

    private func finishedMetrics(_ name: String) -> [String: JSONValue] {
        condition.lock(); defer { condition.unlock() }
        return finished[name]?.metrics ?? [:]
    }

    /// Copies artifacts to the `outputs:` paths the manifest asks for.
    private func restoreOutputs(of instance: StageInstance, _ outputs: [String: ArtifactReference]) throws {
        for (artifact, path) in instance.outputs.sorted(by: { $0.key < $1.key }) {
            guard let reference = outputs[artifact] else {
                throw StageFailure("'outputs:' asks for artifact '\(artifact)', but stage kind '\(instance.kind.name)' produced only: \(outputs.keys.sorted().joined(separator: ", "))")
            }
            let destination = plan.projectDirectory.appendingPathComponent(Self.expand(path, for: instance))
            try ArtifactStore.copyAtomically(store.objectURL(reference.digest), to: destination)
        }
    }

    /// Matrix instances share one `outputs:` line; `${matrix.NAME}` in the path keeps their files apart.
    static func expand(_ path: String, for instance: StageInstance) -> String {
        MatrixReference.substitute(.string(path), with: instance.matrixValues).stringValue ?? path
    }

    private func matrixObject(_ instance: StageInstance) -> [String: JSONValue] {
        Dictionary(uniqueKeysWithValues: instance.matrixValues.map { ($0.name, $0.value) })
    }

    // MARK: - Printing

    static func describe(_ result: StageRunRecord, index: Int, total: Int) -> String {
        let width = String(total).count
        let counter = "[" + String(repeating: " ", count: width - String(index).count) + "\(index)/\(total)]"
        let key = result.key.map { String($0.prefix(10)) } ?? "----------"
        var line = "\(counter) \(result.outcome.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(key)  \(result.instance)"
        if result.outcome == .ran { line += String(format: "  (%.1f s)", result.seconds) }
        let metrics = MetricsFormatter.inline(result.metrics)
        if !metrics.isEmpty { line += "  " + metrics }
        for warning in StageResult.warnings(in: result.metrics) { line += "\n      warning: " + warning }
        if let error = result.error { line += "\n      " + error.replacingOccurrences(of: "\n", with: "\n      ") }
        return line
    }

    static func makeRunID(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd-HHmmss-SSS"
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: date) + "-" + UUID().uuidString.prefix(4).lowercased()
    }
}

/// Short text forms of metrics for run lines and tables.
public enum MetricsFormatter {
    /// Scalar metrics only, `name=value`, sorted.
    public static func inline(_ metrics: [String: JSONValue]) -> String {
        metrics.keys.sorted().compactMap { name in
            scalar(metrics[name]!).map { "\(name)=\($0)" }
        }.joined(separator: " ")
    }

    public static func scalar(_ value: JSONValue) -> String? {
        switch value {
        case .double(let number): return abs(number) >= 1000 || number == number.rounded() ? String(format: "%.6g", number) : String(format: "%.4f", number)
        case .int, .bool, .string: return value.description
        default: return nil
        }
    }
}
