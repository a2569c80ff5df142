import Foundation

/// The version of qatflow; part of every stage key, so a new engine never reuses an old engine's results.
public enum QatflowVersion {
    public static let string = "0.3.0"
}

/// How one stage instance ended in a run.
public enum StageOutcome: String, Codable, Sendable {
    /// Its key had a record: no work done, outputs restored.
    case cached
    /// It ran and its outputs were stored.
    case ran
    case failed
    /// Not run because a stage it needs failed.
    case skipped
}

public struct StageRunRecord: Codable, Sendable {
    public let instance: String
    public let stage: String
    public let kind: String
    public let outcome: StageOutcome
    /// nil when the stage was skipped before its key could be known.
    public let key: String?
    public let seconds: Double
    public let parameters: [String: JSONValue]
    public let matrix: [String: JSONValue]
    public let outputs: [String: ArtifactReference]
    public let metrics: [String: JSONValue]
    public let error: String?
    /// Where the outputs were computed: this run's machine for a stage that ran, the cache record's for a cached
    /// one (nil for failed or skipped stages and for records from before qatflow recorded it).
    public var machine: MachineRecord? = nil
}

/// `.qatflow/runs/<id>/run.json`.
public struct RunRecord: Codable, Sendable {
    public let id: String
    public let manifest: String
    public let name: String
    public let started: String
    public let seconds: Double
    public let jobs: Int
    public let overrides: [String]
    public let succeeded: Bool
    public let stages: [StageRunRecord]
    public let engineVersion: String
    /// The machine this run ran on (nil in runs recorded before qatflow recorded it).
    public var machine: MachineRecord? = nil
    /// `local` or `slurm` (nil in runs recorded before there was a choice). Under Slurm each stage's own
    /// `machine` names the node that computed it.
    public var executor: String? = nil

    public var summary: String {
        let count = { (outcome: StageOutcome) in stages.filter { $0.outcome == outcome }.count }
        return "\(count(.ran)) ran, \(count(.cached)) cached, \(count(.failed)) failed, \(count(.skipped)) skipped"
    }
}

extension Date {
    var iso8601: String { ISO8601DateFormatter().string(from: self) }
}
