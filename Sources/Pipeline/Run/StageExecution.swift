import Foundation

/// Runs one stage instance against the cache. This is the one code path of every executor: `--executor local`
/// calls it in process, a Slurm job calls it inside `qatflow run-stage JOB.json`.
///
/// The instance's key is computed from its parameters and its inputs' digests; a usable record under that key is
/// restored. Otherwise the key is locked (`locks/<key>`, a `HolderFile`, so runs on other processes and machines that
/// share the cache compute it once), the cache is checked again (the holder may just have stored it), and the stage
/// runs in a scratch folder; its artifacts go to the object store and its record is written last.
public struct StageExecution: Sendable {
    public let plan: Plan
    public let store: ArtifactStore
    public let forced: Set<String>
    public let quiet: Bool
    public let print: @Sendable (String) -> Void
    private let keys: StageKeyBuilder

    public init(plan: Plan, store: ArtifactStore, forced: Set<String>, quiet: Bool, print: @escaping @Sendable (String) -> Void) {
        self.plan = plan
        self.store = store
        self.forced = forced
        self.quiet = quiet
        self.print = print
        self.keys = StageKeyBuilder(plan: plan)
    }

    /// The key `instance` has once its inputs are `inputs` (need name → artifacts, in `needs:` order).
    public func key(of instance: StageInstance, inputs: [(String, [String: ArtifactReference])]) throws -> String {
        try keys.key(for: instance, inputs: inputs.map { $0.1.mapValues(\.digest) })
    }

    /// A record for `instance` restored from the cache, if its key has a usable one and it is not forced.
    public func cachedRecord(_ instance: StageInstance, key: String) -> StageRunRecord? {
        guard !isForced(instance), let cached = store.usableRecord(forKey: key) else { return nil }
        guard (try? restoreOutputs(of: instance, cached.outputs)) != nil else { return nil }
        return record(instance, .cached, key: key, seconds: 0, outputs: cached.outputs, metrics: cached.metrics, machine: cached.machine)
    }

    func isForced(_ instance: StageInstance) -> Bool {
        forced.contains(instance.stageID) || forced.contains(instance.name)
    }

    /// Runs (or restores) `instance`. `upstream` holds the records of the instances it needs.
    public func run(_ instance: StageInstance, upstream: [String: StageRunRecord]) -> StageRunRecord {
        let clock = Date()
        var key: String?
        do {
            let inputs = try instance.needs.map { need -> (String, [String: ArtifactReference]) in
                guard let record = upstream[need], record.outcome == .ran || record.outcome == .cached else {
                    throw StageFailure("stage '\(instance.name)' needs '\(need)', which has no outputs")
                }
                return (need, record.outputs)
            }
            let stageKey = try self.key(of: instance, inputs: inputs)
            key = stageKey
            if let cached = cachedRecord(instance, key: stageKey) { return cached }
            let lock = try HolderFile.acquire(store.keyLockFile(stageKey)) { holder in
                if !quiet { print("      … \(instance.name): waiting for \(holder), which is computing key \(stageKey.prefix(10))") }
            }
            defer { lock.release() }
            if let cached = cachedRecord(instance, key: stageKey) { return cached }
            if !quiet { print("      → running \(instance.name) (key \(stageKey.prefix(10)))") }
            let result = try execute(instance, key: stageKey, inputs: inputs, upstream: upstream, started: clock)
            return result
        } catch {
            return record(instance, .failed, key: key, seconds: Date().timeIntervalSince(clock), error: String(describing: error))
        }
    }

    private func execute(_ instance: StageInstance, key stageKey: String, inputs: [(String, [String: ArtifactReference])],
                         upstream: [String: StageRunRecord], started clock: Date) throws -> StageRunRecord {
        let scratch = try store.makeScratchDirectory(prefix: instance.name)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let output = scratch.appendingPathComponent("out")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        var context = StageContext(
            stageID: instance.name, parameters: instance.parameters,
            inputs: instance.needs.enumerated().map { index, need in
                StageInput(stageID: need, kind: plan.instance(named: need)!.kind.name,
                           artifacts: inputs[index].1.mapValues { store.objectURL($0.digest) },
                           metrics: upstream[need]?.metrics ?? [:])
            },
            outputDirectory: output, projectDirectory: plan.projectDirectory, datasets: plan.datasets,
            progress: ProgressReporter(prefix: instance.name, quiet: quiet),
            checkpointDirectory: store.checkpointDirectory(forKey: stageKey),
            log: { [print, quiet, name = instance.name] message in
                if !quiet { print("      \(name): \(message)") }
            })
        context.threads = instance.resources.cpus
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
        let inputDigests = Dictionary(uniqueKeysWithValues: inputs.map { ($0.0, $0.1.mapValues(\.digest)) })
        try store.write(StageRecord(key: stageKey, kind: instance.kind.name, instance: instance.name,
                                    parameters: instance.parameters, inputs: inputDigests, outputs: stored,
                                    metrics: result.metrics, created: Date().iso8601, seconds: seconds,
                                    engineVersion: QatflowVersion.string, machine: .current))
        store.removeCheckpoints(forKey: stageKey)
        try restoreOutputs(of: instance, stored)
        return record(instance, .ran, key: stageKey, seconds: seconds, outputs: stored, metrics: result.metrics, machine: .current)
    }

    /// The record of an instance that was not run because `cause` (an instance it needs) failed or was not run.
    public static func skipped(_ instance: StageInstance, because cause: StageRunRecord, matrix: [String: JSONValue]) -> StageRunRecord {
        StageRunRecord(instance: instance.name, stage: instance.stageID, kind: instance.kind.name, outcome: .skipped, key: nil,
                       seconds: 0, parameters: instance.parameters, matrix: matrix, outputs: [:], metrics: [:],
                       error: "not run: '\(cause.instance)' \(cause.outcome == .failed ? "failed" : "was not run")")
    }

    func record(_ instance: StageInstance, _ outcome: StageOutcome, key: String?, seconds: Double,
                outputs: [String: ArtifactReference] = [:], metrics: [String: JSONValue] = [:], error: String? = nil,
                machine: MachineRecord? = nil) -> StageRunRecord {
        StageRunRecord(instance: instance.name, stage: instance.stageID, kind: instance.kind.name, outcome: outcome,
                       key: key, seconds: seconds, parameters: instance.parameters,
                       matrix: Self.matrixObject(instance), outputs: outputs, metrics: metrics, error: error, machine: machine)
    }

    static func matrixObject(_ instance: StageInstance) -> [String: JSONValue] {
        Dictionary(uniqueKeysWithValues: instance.matrixValues.map { ($0.name, $0.value) })
    }

    /// Copies artifacts to the `outputs:` paths the manifest asks for.
    func restoreOutputs(of instance: StageInstance, _ outputs: [String: ArtifactReference]) throws {
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
}
