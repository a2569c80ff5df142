import Foundation

/// One stage instance as a job: what `qatflow run-stage JOB.json` needs to run it anywhere the project and the cache
/// are reachable (a Slurm node sharing the filesystem). The job names the manifest, the overrides and the instance,
/// and re-plans from them, so the instance, its parameters and its key are exactly the submitter's; its inputs come
/// from the result files of the jobs it needs. It writes its own result (a `StageRunRecord`) when done.
public struct StageJob: Codable, Sendable {
    public var manifest: String
    public var project: String
    public var cache: String
    public var overrides: [String]
    public var instance: String
    public var forced: Bool
    /// The result file of every instance this one needs.
    public var upstreamResults: [String: String]
    public var resultFile: String

    public init(manifest: String, project: String, cache: String, overrides: [String], instance: String, forced: Bool,
                upstreamResults: [String: String], resultFile: String) {
        self.manifest = manifest
        self.project = project
        self.cache = cache
        self.overrides = overrides
        self.instance = instance
        self.forced = forced
        self.upstreamResults = upstreamResults
        self.resultFile = resultFile
    }

    public static func read(_ url: URL) throws -> StageJob {
        guard let data = FileManager.default.contents(atPath: url.path) else { throw StageFailure("\(url.path): cannot read the job file") }
        do { return try JSONDecoder().decode(StageJob.self, from: data) } catch {
            throw StageFailure("\(url.path): not a qatflow stage job: \(error)")
        }
    }

    /// Runs the instance through `StageExecution` (what the local executor calls in process) and writes the result
    /// file. Returns the record; a failed stage is a record with outcome `failed`, not a thrown error.
    public func run(registry: StageRegistry, print: @escaping @Sendable (String) -> Void) throws -> StageRunRecord {
        let plan = try Plan.load(manifest: URL(fileURLWithPath: manifest), projectDirectory: URL(fileURLWithPath: project),
                                 overrides: overrides, registry: registry)
        guard let stage = plan.instance(named: instance) else {
            throw StageFailure("\(manifest) has no stage instance '\(instance)' (with overrides \(overrides)); was the manifest edited after the run was submitted?")
        }
        var upstream: [String: StageRunRecord] = [:]
        for need in stage.needs {
            guard let file = upstreamResults[need], let data = FileManager.default.contents(atPath: file),
                  let record = try? JSONDecoder().decode(StageRunRecord.self, from: data) else {
                throw StageFailure("stage '\(instance)' needs '\(need)', whose result file \(upstreamResults[need] ?? "(none)") is missing")
            }
            upstream[need] = record
        }
        let store = ArtifactStore(root: URL(fileURLWithPath: cache))
        try store.prepare()
        let marker = try store.markActiveRun()
        defer { marker.release() }
        let execution = StageExecution(plan: plan, store: store, forced: forced ? [instance] : [], quiet: false, print: print)
        let record = execution.run(stage, upstream: upstream)
        try store.writeJSON(record, to: URL(fileURLWithPath: resultFile))
        return record
    }
}

extension Plan {
    /// Parses `manifest`, applies `overrides` (`STAGE.PARAM=VALUE`, `matrix.NAME=[...]`) and plans it.
    public static func load(manifest: URL, displayName: String? = nil, projectDirectory: URL, overrides: [String],
                            registry: StageRegistry) throws -> Plan {
        let parsed = try ManifestParser.parse(contentsOf: manifest, displayName: displayName ?? manifest.path)
        return try Planner(registry: registry, projectDirectory: projectDirectory).plan(parsed, overrides: try overrides.map(Override.init(parsing:)))
    }
}
