import Foundation

/// How `qatflow run --executor slurm` submits jobs.
public struct SlurmOptions: Sendable {
    public var partition: String?
    public var account: String?
    /// Passed to every `sbatch` as they are (e.g. `--qos=short`, `--constraint=avx2`).
    public var extraArguments: [String]
    /// The qatflow binary the jobs run (`qatflow run-stage JOB.json`); it must be reachable from the nodes.
    public var qatflow: String
    /// Seconds between two looks at the queue.
    public var pollInterval: Double

    public init(partition: String? = nil, account: String? = nil, extraArguments: [String] = [], qatflow: String, pollInterval: Double = 2) {
        self.partition = partition
        self.account = account
        self.extraArguments = extraArguments
        self.qatflow = qatflow
        self.pollInterval = pollInterval
    }
}

/// `.qatflow/runs/<id>/slurm.json`: the jobs of a Slurm run, for `qatflow status` and `qatflow cancel`.
public struct SlurmRunJobs: Codable, Sendable {
    public struct Job: Codable, Sendable {
        public let instance: String
        public let id: String
        public let log: String
    }
    public let run: String
    public let manifest: String
    public var jobs: [Job]

    public static func fileURL(runDirectory: URL) -> URL { runDirectory.appendingPathComponent("slurm.json") }
}

/// Runs a plan as Slurm jobs over the shared cache: every instance whose result is not known at submit time
/// (cached instances are restored at once) becomes one `sbatch` job running `qatflow run-stage JOB.json`, with
/// `--dependency=afterok:` on the jobs it needs and `--kill-on-invalid-dep=yes`, so a failure cancels its dependents.
/// Then it follows the queue until every job ended, reads the jobs' result files and writes the run record and
/// report like a local run. The project folder and the cache must be on a filesystem the nodes share.
public final class SlurmExecutor {
    private let plan: Plan
    private let manifest: URL
    private let store: ArtifactStore
    private let options: RunOptions
    private let slurm: SlurmOptions
    private let print: @Sendable (String) -> Void

    public init(plan: Plan, manifest: URL, store: ArtifactStore, options: RunOptions, slurm: SlurmOptions,
                print: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.manifest = manifest.standardizedFileURL
        self.store = store
        self.options = options
        self.slurm = slurm
        self.print = print
    }

    @discardableResult
    public func run() throws -> RunRecord {
        try store.prepare()
        let marker = try store.markActiveRun()
        defer { marker.release() }
        let started = Date()
        let runID = Runner.makeRunID(started)
        let runDirectory = store.runsDirectory.appendingPathComponent(runID)
        let jobsDirectory = runDirectory.appendingPathComponent("jobs"), logs = runDirectory.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: jobsDirectory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        let execution = StageExecution(plan: plan, store: store, forced: options.forced, quiet: options.quiet, print: print)
        // Jobs re-plan from a copy taken now, so editing the manifest while they wait in the queue changes nothing.
        let manifestCopy = runDirectory.appendingPathComponent("manifest.yaml")
        try ArtifactStore.copyAtomically(manifest, to: manifestCopy)

        var known: [String: StageRunRecord] = [:]
        var submitted = SlurmRunJobs(run: runID, manifest: manifest.path, jobs: [])
        var jobIDs: [String: String] = [:]
        // Numbered by plan order: sanitised instance names alone could collide ('a[b=1]' and 'a_b_1_').
        let position = Dictionary(uniqueKeysWithValues: plan.instances.enumerated().map { ($1.name, $0) })
        func fileName(_ name: String) -> String { "\(position[name]!)-\(Self.fileName(name))" }
        func resultFile(_ name: String) -> URL { jobsDirectory.appendingPathComponent("\(fileName(name)).result.json") }
        for instance in plan.instances {
            if let broken = instance.needs.compactMap({ known[$0] }).first(where: { $0.outcome == .failed || $0.outcome == .skipped }) {
                known[instance.name] = StageExecution.skipped(instance, because: broken, matrix: StageExecution.matrixObject(instance))
                continue
            }
            // Every input known now (cached upstream, or none): the key is known too, and a cached result is restored.
            if instance.needs.allSatisfy({ known[$0] != nil }) {
                let inputs = instance.needs.map { ($0, known[$0]!.outputs) }
                do {
                    let key = try execution.key(of: instance, inputs: inputs)
                    if let cached = execution.cachedRecord(instance, key: key) {
                        known[instance.name] = cached
                        try store.writeJSON(cached, to: resultFile(instance.name))
                        continue
                    }
                } catch {
                    known[instance.name] = execution.record(instance, .failed, key: nil, seconds: 0, error: String(describing: error))
                    continue
                }
            }
            let job = StageJob(manifest: manifestCopy.path, project: plan.projectDirectory.path, cache: store.root.path,
                               overrides: options.overrides, instance: instance.name, forced: execution.isForced(instance),
                               upstreamResults: Dictionary(uniqueKeysWithValues: instance.needs.map { ($0, resultFile($0).path) }),
                               resultFile: resultFile(instance.name).path)
            let jobFile = jobsDirectory.appendingPathComponent("\(fileName(instance.name)).json")
            try store.writeJSON(job, to: jobFile)
            let log = logs.appendingPathComponent("\(fileName(instance.name)).log")
            let dependencies = instance.needs.compactMap { jobIDs[$0] }
            let id = try submit(instance, jobFile: jobFile, log: log, dependencies: dependencies, runID: runID)
            jobIDs[instance.name] = id
            submitted.jobs.append(.init(instance: instance.name, id: id, log: log.path))
            try store.writeJSON(submitted, to: SlurmRunJobs.fileURL(runDirectory: runDirectory))
            if !options.quiet { print("submitted \(instance.name) as Slurm job \(id)\(dependencies.isEmpty ? "" : " (after \(dependencies.joined(separator: ", ")))")") }
        }
        if !submitted.jobs.isEmpty {
            print("run \(runID): \(submitted.jobs.count) Slurm job\(submitted.jobs.count == 1 ? "" : "s") (qatflow status \(runID); qatflow cancel \(runID)); logs in \(logs.path)")
        }
        let states = try follow(submitted.jobs)
        for job in submitted.jobs {
            guard let instance = plan.instance(named: job.instance) else { continue }
            let state = states[job.id] ?? SlurmJobState(state: "UNKNOWN", reason: "")
            if let data = FileManager.default.contents(atPath: resultFile(job.instance).path),
               var record = try? JSONDecoder().decode(StageRunRecord.self, from: data) {
                if record.outcome == .failed { record = record.withError((record.error ?? "failed") + "\n(Slurm job \(job.id), log: \(job.log))") }
                known[job.instance] = record
            } else if state.reason == "DependencyNeverSatisfied", let broken = instance.needs.compactMap({ known[$0] }).first(where: { $0.outcome != .ran && $0.outcome != .cached }) {
                known[job.instance] = StageExecution.skipped(instance, because: broken, matrix: StageExecution.matrixObject(instance))
            } else {
                known[job.instance] = execution.record(instance, .failed, key: nil, seconds: 0,
                                                       error: "Slurm job \(job.id) ended \(state.state)\(state.reason.isEmpty || state.reason == "None" ? "" : " (\(state.reason))") without a result; log: \(job.log)")
            }
        }
        var count = 0
        for instance in plan.instances where !options.quiet || known[instance.name]?.outcome == .failed {
            count += 1
            print(Runner.describe(known[instance.name]!, index: count, total: plan.instances.count))
        }
        return try Runner.finish(plan: plan, store: store, options: options, runID: runID, started: started,
                                 stages: plan.instances.map { known[$0.name]! }, executor: "slurm", print: print)
    }

    /// `sbatch --parsable ...`; returns the job id.
    private func submit(_ instance: StageInstance, jobFile: URL, log: URL, dependencies: [String], runID: String) throws -> String {
        let resources = instance.resources
        var arguments = ["--parsable", "--job-name", "qatflow:\(instance.name)", "--output", log.path,
                         "--cpus-per-task", String(resources.cpus), "--mem", "\(resources.memoryMB)M",
                         "--time", String(max(1, resources.minutes)), "--chdir", plan.projectDirectory.path,
                         "--comment", "qatflow run \(runID)"]
        if let partition = slurm.partition { arguments += ["--partition", partition] }
        if let account = slurm.account { arguments += ["--account", account] }
        if !dependencies.isEmpty { arguments += ["--dependency", "afterok:" + dependencies.joined(separator: ":"), "--kill-on-invalid-dep=yes"] }
        arguments += slurm.extraArguments
        arguments += ["--wrap", "\(Self.shellQuote(slurm.qatflow)) run-stage \(Self.shellQuote(jobFile.path))"]
        let output = try Self.command("sbatch", arguments)
        guard let id = output.split(separator: ";").first.map({ $0.trimmingCharacters(in: .whitespacesAndNewlines) }), !id.isEmpty, id.allSatisfy(\.isNumber) else {
            throw StageFailure("sbatch printed no job id for \(instance.name): \(output)")
        }
        return id
    }

    /// Polls the queue until every job has ended; prints each state change. Returns the final states. One
    /// `squeue` per poll covers the queued and running jobs; a job leaves the queue once, and only then is its
    /// final state asked for (`scontrol`), so a poll costs one command however large the sweep.
    private func follow(_ jobs: [SlurmRunJobs.Job]) throws -> [String: SlurmJobState] {
        var last: [String: SlurmJobState] = [:]
        var final: [String: SlurmJobState] = [:]
        let names = Dictionary(uniqueKeysWithValues: jobs.map { ($0.id, $0.instance) })
        while true {
            let open = jobs.map(\.id).filter { final[$0] == nil }
            var states = final
            let queued = open.isEmpty ? [:] : ((try? Self.queueStates(of: open)) ?? [:])  // squeue failing: scontrol per job
            for id in open {
                if let state = queued[id], !state.isFinal { states[id] = state; continue }
                let ended = try Self.states(of: [id])[id]!
                states[id] = ended
                if ended.isFinal { final[id] = ended }
            }
            for job in jobs {
                guard let state = states[job.id], state != last[job.id] else { continue }
                last[job.id] = state
                if !options.quiet { print("      job \(job.id) \(names[job.id]!): \(state.state)\(state.reason.isEmpty || state.reason == "None" ? "" : " (\(state.reason))")") }
            }
            if jobs.allSatisfy({ states[$0.id]?.isFinal ?? false }) { return states }
            Thread.sleep(forTimeInterval: slurm.pollInterval)
        }
    }

    /// States of the jobs still in the queue, from one `squeue` (jobs that have left it are absent).
    static func queueStates(of ids: [String]) throws -> [String: SlurmJobState] {
        var result: [String: SlurmJobState] = [:]
        let text = try command("squeue", ["--noheader", "--jobs", ids.joined(separator: ","), "--states", "all", "--format", "%i %T %r"])
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", maxSplits: 2).map(String.init)
            guard fields.count >= 2 else { continue }
            result[fields[0]] = SlurmJobState(state: fields[1], reason: fields.count > 2 ? fields[2] : "")
        }
        return result
    }

    /// The state of each job, from `scontrol show job` (no accounting database needed; the controller keeps ended
    /// jobs for `MinJobAge` seconds). A job the controller no longer knows counts as ended (`GONE`).
    public static func states(of ids: [String]) throws -> [String: SlurmJobState] {
        var result: [String: SlurmJobState] = [:]
        for id in ids {
            guard let text = try? command("scontrol", ["show", "job", id, "--oneliner"]) else {
                result[id] = SlurmJobState(state: "GONE", reason: "no longer known to slurmctld")
                continue
            }
            func field(_ name: String) -> String {
                text.split(separator: " ").first { $0.hasPrefix(name + "=") }.map { String($0.dropFirst(name.count + 1)) } ?? ""
            }
            result[id] = SlurmJobState(state: field("JobState"), reason: field("Reason"))
        }
        return result
    }

    /// Cancels every job of a Slurm run (`scancel`); returns their ids.
    public static func cancel(_ jobs: SlurmRunJobs) throws -> [String] {
        let ids = jobs.jobs.map(\.id)
        if !ids.isEmpty { _ = try command("scancel", ids) }
        return ids
    }

    /// Runs a Slurm command; its stdout, or an error with its stderr.
    @discardableResult
    static func command(_ name: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [name] + arguments
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        do { try process.run() } catch {
            throw StageFailure("cannot run \(name): \(error) (is Slurm installed on this machine?)")
        }
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw StageFailure("\(name) \(arguments.prefix(3).joined(separator: " ")) failed (exit \(process.terminationStatus)): \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        return stdout
    }

    static func fileName(_ instance: String) -> String {
        String(instance.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." ? $0 : "_" })
    }

    static func shellQuote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
}

/// A Slurm job's state and reason as `scontrol` prints them (`PENDING`/`Dependency`, `FAILED`/`NonZeroExitCode`).
public struct SlurmJobState: Equatable, Sendable {
    public let state: String
    public let reason: String
    public var isFinal: Bool { !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING", "STAGE_OUT"].contains(state) }
}

extension StageRunRecord {
    func withError(_ error: String) -> StageRunRecord {
        StageRunRecord(instance: instance, stage: stage, kind: kind, outcome: outcome, key: key, seconds: seconds, parameters: parameters,
                       matrix: matrix, outputs: outputs, metrics: metrics, error: error, machine: machine)
    }
}
