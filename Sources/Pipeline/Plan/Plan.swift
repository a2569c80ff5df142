import Foundation
import Datasets
import Yams

/// One runnable stage: a manifest stage for one combination of the matrix values it depends on.
public struct StageInstance: Sendable {
    /// `qat` or, when expanded by the matrix, `qat[bits=4,lr=0.001]`.
    public let name: String
    /// The manifest stage id this instance comes from.
    public let stageID: String
    public let kind: StageKind
    /// Every parameter of the kind, with defaults filled in and values type-checked and normalised.
    public let parameters: [String: JSONValue]
    /// The matrix values this instance was made for, in matrix order.
    public let matrixValues: [(name: String, value: JSONValue)]
    /// Names of the instances it needs, in `needs:` order.
    public let needs: [String]
    public let outputs: [String: String]
    public let location: SourceLocation
    /// The kind's default resources with the manifest's `resources:` applied.
    public var resources = StageResources()
}

/// The expanded DAG: instances in an order where every instance comes after the ones it needs.
public struct Plan: Sendable {
    public let manifest: Manifest
    public let instances: [StageInstance]
    public let datasets: [String: DatasetSpec]
    public let projectDirectory: URL

    public func instance(named name: String) -> StageInstance? { instances.first { $0.name == name } }

    /// Only the `targets` (a stage id selects each of its instances, an instance name one) and every instance they
    /// (transitively) need, in plan order — `qatflow run MANIFEST STAGE...`, like `dvc repro TARGET`. No targets: all.
    public func restricted(to targets: [String]) throws -> Plan {
        guard !targets.isEmpty else { return self }
        var frontier: [String] = []
        var unknown: [ManifestDiagnostic] = []
        for target in targets {
            let matches = instances.filter { $0.stageID == target || $0.name == target }.map(\.name)
            if matches.isEmpty {
                let ids = manifest.stages.map(\.id)
                unknown.append(ManifestDiagnostic(nil, "no stage '\(target)' in \(manifest.file) to run; stages: \(ids.joined(separator: ", "))" + Suggestion.didYouMean(target, among: ids)))
            }
            frontier += matches
        }
        if !unknown.isEmpty { throw ManifestError(unknown) }
        var wanted = Set<String>()
        while let name = frontier.popLast() {
            if wanted.insert(name).inserted { frontier += instance(named: name)?.needs ?? [] }
        }
        return Plan(manifest: manifest, instances: instances.filter { wanted.contains($0.name) }, datasets: datasets,
                    projectDirectory: projectDirectory)
    }

    /// Every instance that (transitively) needs `name`.
    public func dependents(of name: String) -> Set<String> {
        var result = Set<String>()
        var frontier = [name]
        while let current = frontier.popLast() {
            for instance in instances where instance.needs.contains(current) && !result.contains(instance.name) {
                result.insert(instance.name)
                frontier.append(instance.name)
            }
        }
        return result
    }
}

/// A `--set` override from the command line: `STAGE.PARAM=VALUE` or `matrix.NAME=[v1, v2]`.
public struct Override: Sendable, CustomStringConvertible {
    public let target: String
    public let parameter: String
    public let value: JSONValue
    public let text: String

    /// Parses `STAGE.PARAM=VALUE`; VALUE is read as YAML (`4`, `0.001`, `true`, `[4, 8]`, `name`).
    public init(parsing text: String) throws {
        guard let equals = text.firstIndex(of: "=") else {
            throw ManifestError(nil, "--set '\(text)': expected STAGE.PARAM=VALUE")
        }
        let path = String(text[..<equals])
        let valueText = String(text[text.index(after: equals)...])
        guard let dot = path.firstIndex(of: "."), dot != path.startIndex, path.index(after: dot) != path.endIndex else {
            throw ManifestError(nil, "--set '\(text)': expected STAGE.PARAM=VALUE (e.g. qat.bits=4)")
        }
        self.target = String(path[..<dot])
        self.parameter = String(path[path.index(after: dot)...])
        self.text = text
        self.value = try Override.parseValue(valueText, context: text)
    }

    static func parseValue(_ text: String, context: String) throws -> JSONValue {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if trimmed.hasPrefix("[") {
            guard let node = try? Yams.compose(yaml: trimmed), case .sequence(let sequence) = node,
                  sequence.allSatisfy({ if case .scalar = $0 { return true }; return false }) else {
                throw ManifestError(nil, "--set '\(context)': cannot read the list '\(trimmed)'; expected e.g. [4, 8]")
            }
            return .array(sequence.map { ManifestParser.typedScalar($0.string ?? "", plain: $0.scalar?.style == .plain) })
        }
        return ManifestParser.typedScalar(trimmed, plain: true)
    }

    public var description: String { text }
}
