import Foundation
import Datasets

/// A parameter value as written in the manifest, with where it was written (for error messages).
public struct ParameterEntry: Sendable {
    public var value: JSONValue
    /// nil when the value came from `--set`.
    public var location: SourceLocation?

    public init(value: JSONValue, location: SourceLocation?) {
        self.value = value
        self.location = location
    }
}

/// A dataset declared under `datasets:`.
public struct DatasetDeclaration: Sendable {
    public var name: String
    public var spec: DatasetSpec
    public var location: SourceLocation
}

/// A stage as declared under `stages:` (before matrix expansion).
public struct StageDeclaration: Sendable {
    public var id: String
    public var kind: String
    public var needs: [String]
    public var parameters: [String: ParameterEntry]
    /// Artifact name → project-relative path the artifact is copied to after the stage finishes or is restored.
    public var outputs: [String: String]
    public var location: SourceLocation
    public var kindLocation: SourceLocation
    public var needsLocations: [SourceLocation]
    /// `resources:` — each field given overrides the kind's default.
    public var resources: ResourceOverrides = ResourceOverrides()
}

/// A manifest stage's `resources: {cpus: 8, mem: 16G, time: 30m}`.
public struct ResourceOverrides: Sendable, Hashable {
    public var cpus: Int?
    public var memoryMB: Int?
    public var minutes: Int?
    public init() {}

    public func applied(to defaults: StageResources) -> StageResources {
        StageResources(cpus: cpus ?? defaults.cpus, memoryMB: memoryMB ?? defaults.memoryMB, minutes: minutes ?? defaults.minutes)
    }
}

/// One `matrix:` axis: a parameter name and the values swept.
public struct MatrixAxis: Sendable {
    public var name: String
    public var values: [JSONValue]
    public var location: SourceLocation?

    /// A value already in `values` would make a second instance with the same name and key: refused.
    static func duplicateProblem(name: String, value: JSONValue, among values: [JSONValue]) -> String? {
        guard values.contains(value) else { return nil }
        return "matrix '\(name)' lists \(value) twice; each value makes one stage instance, named and keyed by it, so a repeated value would plan the same instance twice"
    }
}

/// A parsed, structurally valid manifest. Stage kinds and parameter types are checked by the planner,
/// which knows the registry.
public struct Manifest: Sendable {
    public var file: String
    public var name: String
    public var datasets: [DatasetDeclaration]
    /// In the order written.
    public var stages: [StageDeclaration]
    /// In the order written; instance names list axes in this order.
    public var matrix: [MatrixAxis]

    public func stage(_ id: String) -> StageDeclaration? { stages.first { $0.id == id } }
}
