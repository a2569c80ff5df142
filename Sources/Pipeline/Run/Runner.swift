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
    private let execution: StageExecution

    /// State shared with worker threads; guarded by `condition`.
    private let condition = NSCondition()
    private var finished: [String: StageRunRecord] = [:]
    private var dispatched = Set<String>()
    private var running = 0
    private var completedCount = 0

    public init(plan: Plan, store: ArtifactStore, options: RunOptions, print: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.store = store
        self.options = options
        self.print = print
        self.execution = StageExecution(plan: plan, store: store, forced: options.forced, quiet: options.quiet, print: print)
    }

    /// Runs the plan; writes and returns the run record. Other runs may share the cache at the same time: each
    /// stage key is locked while it is computed (`StageExecution`), and this run's marker keeps `gc` away.
    @discardableResult
    public func run() throws -> RunRecord {
        try store.prepare()
        let marker = try store.markActiveRun()
        defer { marker.release() }
        store.clearAbandonedTemporaryFiles()

        let started = Date()
        let runID = Self.makeRunID(started)
        schedule()
        let stages = plan.instances.map { finished[$0.name]! }
        return try Self.finish(plan: plan, store: store, options: options, runID: runID, started: started, stages: stages, print: print)
    }

    /// Writes a finished run's record and report (the report failing only warns); throws `RunFailure` when a
    /// stage failed or was skipped. Every executor ends here.
    static func finish(plan: Plan, store: ArtifactStore, options: RunOptions, runID: String, started: Date,
                       stages: [StageRunRecord], executor: String = "local", print: (String) -> Void) throws -> RunRecord {
        let record = RunRecord(id: runID, manifest: plan.manifest.file, name: plan.manifest.name, started: started.iso8601,
                               seconds: Date().timeIntervalSince(started), jobs: options.jobs, overrides: options.overrides,
                               succeeded: !stages.contains { $0.outcome == .failed || $0.outcome == .skipped },
                               stages: stages, engineVersion: QatflowVersion.string, machine: .current, executor: executor)
        let runDirectory = store.runsDirectory.appendingPathComponent(runID)
        try store.writeJSON(record, to: runDirectory.appendingPathComponent("run.json"))
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
                    complete(StageExecution.skipped(instance, because: broken, matrix: StageExecution.matrixObject(instance)))
                    launched = true
                    continue
                }
                guard upstream.allSatisfy({ $0 != nil }), running < options.jobs else { continue }
                dispatched.insert(instance.name)
                running += 1
                launched = true
                DispatchQueue.global().async {
                    let result = self.execute(instance)
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
        completedCount += 1
        if !options.quiet || result.outcome == .failed {
            print(Self.describe(result, index: completedCount, total: plan.instances.count))
        }
    }

    // MARK: - One instance

    private func execute(_ instance: StageInstance) -> StageRunRecord {
        condition.lock()
        let upstream = Dictionary(uniqueKeysWithValues: instance.needs.compactMap { need in finished[need].map { (need, $0) } })
        condition.unlock()
        return execution.run(instance, upstream: upstream)
    }

    // MARK: - Printing

    public static func describe(_ result: StageRunRecord, index: Int, total: Int) -> String {
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
