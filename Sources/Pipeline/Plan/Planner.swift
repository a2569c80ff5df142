import Foundation
import Datasets

/// Turns a manifest into a plan: applies `--set` overrides, checks stage kinds and parameter types against the
/// registry, expands the matrix and orders the instances. No work is done and nothing is written.
public struct Planner {
    public let registry: StageRegistry
    public let projectDirectory: URL

    public init(registry: StageRegistry, projectDirectory: URL) {
        self.registry = registry
        self.projectDirectory = projectDirectory
    }

    public func plan(_ manifest: Manifest, overrides: [Override] = []) throws -> Plan {
        var diagnostics: [ManifestDiagnostic] = []
        var manifest = manifest
        apply(overrides, to: &manifest, diagnostics: &diagnostics)
        let datasets = Dictionary(manifest.datasets.map { ($0.name, $0.spec) }, uniquingKeysWith: { a, _ in a })

        // Kinds, needs arity and the matrix names each stage references directly.
        var kinds: [String: StageKind] = [:]
        var directAxes: [String: Set<String>] = [:]
        let axisNames = manifest.matrix.map(\.name)
        for stage in manifest.stages {
            guard let kind = registry.kind(named: stage.kind) else {
                diagnostics.append(ManifestDiagnostic(stage.kindLocation, "unknown stage kind '\(stage.kind)'; known kinds: \(registry.names.joined(separator: ", "))" + Suggestion.didYouMean(stage.kind, among: registry.names)))
                continue
            }
            kinds[stage.id] = kind
            checkInputs(stage, kind, &diagnostics)
            var referenced = Set<String>()
            for (name, entry) in stage.parameters {
                guard kind.parameter(named: name) != nil else {
                    diagnostics.append(ManifestDiagnostic(entry.location ?? stage.location, "unknown parameter '\(name)' for stage kind '\(kind.name)' (stage '\(stage.id)'); its parameters: \(kind.parameters.map(\.name).joined(separator: ", "))" + Suggestion.didYouMean(name, among: kind.parameters.map(\.name))))
                    continue
                }
                for reference in MatrixReference.names(in: entry.value) {
                    if axisNames.contains(reference) { referenced.insert(reference) } else {
                        diagnostics.append(ManifestDiagnostic(entry.location ?? stage.location, "'${matrix.\(reference)}' names no entry of 'matrix:'" + (axisNames.isEmpty ? " (the manifest has no matrix)" : "; matrix names: \(axisNames.joined(separator: ", "))") + Suggestion.didYouMean(reference, among: axisNames)))
                    }
                }
            }
            for parameter in kind.parameters where parameter.defaultValue == nil && stage.parameters[parameter.name] == nil {
                diagnostics.append(ManifestDiagnostic(stage.location, "stage '\(stage.id)' (kind '\(kind.name)') is missing required parameter '\(parameter.name)': \(parameter.help)"))
            }
            directAxes[stage.id] = referenced
        }
        if !diagnostics.isEmpty { throw ManifestError(diagnostics) }

        let order = topologicalOrder(manifest.stages)
        // A stage varies with the matrix names it references and those its upstream stages vary with.
        var axes: [String: [String]] = [:]
        for stage in order {
            var names = directAxes[stage.id] ?? []
            for need in stage.needs { names.formUnion(axes[need] ?? []) }
            axes[stage.id] = axisNames.filter { names.contains($0) }
        }

        var instances: [StageInstance] = []
        var planned: [String: StageInstance] = [:]  // by instance name, for `checkUpstream`
        var instanceProblems = InstanceDiagnostics()
        for stage in order {
            let kind = kinds[stage.id]!
            for combination in combinations(of: axes[stage.id]!, in: manifest.matrix) {
                let name = Self.instanceName(stage.id, combination)
                var parameters: [String: JSONValue] = [:]
                var wellTyped = true
                for spec in kind.parameters {
                    let entry = stage.parameters[spec.name]
                    guard var value = entry?.value ?? spec.defaultValue else { continue }
                    value = MatrixReference.substitute(value, with: combination)
                    let place = entry?.location ?? stage.location
                    switch checked(value, against: spec, datasets: datasets) {
                    case .success(let normalised): parameters[spec.name] = normalised
                    case .failure(let message):
                        let source = entry?.location == nil && entry != nil ? " (from --set)" : ""
                        instanceProblems.add(place, stage: stage.id, instance: name, ", parameter '\(spec.name)'\(source): \(message)")
                        wellTyped = false
                    }
                }
                let needs = stage.needs.map { need in
                    Self.instanceName(need, combination.filter { axes[need]!.contains($0.name) })
                }
                // Checks across parameters need every parameter well-typed first.
                if wellTyped {
                    let upstream = needs.compactMap { planned[$0] }
                    for problem in kind.check(parameters, stage.needs.count) + kind.checkUpstream(parameters, upstream) {
                        let entry = problem.parameter.flatMap { stage.parameters[$0] }
                        let source = entry != nil && entry?.location == nil ? " (from --set)" : ""
                        instanceProblems.add(entry?.location ?? stage.location, stage: stage.id, instance: name,
                                             "\(problem.parameter == nil ? ":" : ",") \(problem)\(source)")
                    }
                }
                var instance = StageInstance(name: name, stageID: stage.id, kind: kind, parameters: parameters,
                                             matrixValues: combination, needs: needs, outputs: stage.outputs,
                                             location: stage.location)
                instance.resources = stage.resources.applied(to: kind.resources)
                instances.append(instance)
                planned[name] = instance
            }
        }
        diagnostics += instanceProblems.diagnostics
        if !diagnostics.isEmpty { throw ManifestError(diagnostics) }
        return Plan(manifest: manifest, instances: instances, datasets: datasets, projectDirectory: projectDirectory)
    }

    // MARK: - Overrides

    private func apply(_ overrides: [Override], to manifest: inout Manifest, diagnostics: inout [ManifestDiagnostic]) {
        for override in overrides {
            if override.target == "matrix" {
                guard let index = manifest.matrix.firstIndex(where: { $0.name == override.parameter }) else {
                    diagnostics.append(ManifestDiagnostic(nil, "--set \(override): the manifest has no matrix entry '\(override.parameter)'" + Suggestion.didYouMean(override.parameter, among: manifest.matrix.map(\.name))))
                    continue
                }
                let values = override.value.arrayValue ?? [override.value]
                for (position, value) in values.enumerated() {
                    if let duplicate = MatrixAxis.duplicateProblem(name: override.parameter, value: value, among: Array(values[..<position])) {
                        diagnostics.append(ManifestDiagnostic(nil, "--set \(override): \(duplicate)"))
                    }
                }
                manifest.matrix[index].values = values
                manifest.matrix[index].location = nil
                continue
            }
            guard let index = manifest.stages.firstIndex(where: { $0.id == override.target }) else {
                diagnostics.append(ManifestDiagnostic(nil, "--set \(override): no stage '\(override.target)' in \(manifest.file); stages: \(manifest.stages.map(\.id).joined(separator: ", "))" + Suggestion.didYouMean(override.target, among: manifest.stages.map(\.id))))
                continue
            }
            manifest.stages[index].parameters[override.parameter] = ParameterEntry(value: override.value, location: nil)
        }
    }

    // MARK: - Checks

    private func checkInputs(_ stage: StageDeclaration, _ kind: StageKind, _ diagnostics: inout [ManifestDiagnostic]) {
        switch kind.inputs {
        case .none where !stage.needs.isEmpty:
            diagnostics.append(ManifestDiagnostic(stage.needsLocations.first ?? stage.location, "stage '\(stage.id)': kind '\(kind.name)' takes no upstream stages, but 'needs' lists \(stage.needs.joined(separator: ", "))"))
        case .oneModel where stage.needs.count != 1:
            diagnostics.append(ManifestDiagnostic(stage.location, "stage '\(stage.id)': kind '\(kind.name)' needs exactly one upstream stage that produces a model; 'needs' lists \(stage.needs.count)"))
        case .models where stage.needs.isEmpty:
            diagnostics.append(ManifestDiagnostic(stage.location, "stage '\(stage.id)': kind '\(kind.name)' needs at least one upstream stage that produces a model ('needs: [...]')"))
        default: break
        }
    }

    /// Checks a value against its parameter type and normalises it (integers given for numbers become numbers,
    /// a single string given for a list becomes a list), so equal meanings give equal stage keys.
    public func checked(_ value: JSONValue, against spec: ParameterSpec, datasets: [String: DatasetSpec]) -> Result<JSONValue, ParameterError> {
        func fail(_ expected: String) -> Result<JSONValue, ParameterError> {
            .failure(ParameterError("expected \(expected), found \(value.typeName) \(value.canonical)"))
        }
        // An optional parameter (default null) may be left unset or set to null.
        if value == .null && spec.defaultValue == .null { return .success(.null) }
        switch spec.type {
        case .string:
            return value.stringValue != nil ? .success(value) : fail("a string")
        case .int:
            guard let number = value.intValue else { return fail("an integer") }
            return .success(.int(number))
        case .double:
            guard let number = value.doubleValue else { return fail("a number") }
            return .success(.double(number))
        case .bool:
            return value.boolValue != nil ? .success(value) : fail("true or false")
        case .choice(let words):
            guard let word = value.stringValue else { return fail("one of \(words.joined(separator: ", "))") }
            guard words.contains(word) else {
                return .failure(ParameterError("'\(word)' is not one of \(words.joined(separator: ", "))" + Suggestion.didYouMean(word, among: words)))
            }
            return .success(value)
        case .stringList:
            if let single = value.stringValue { return .success(.array([.string(single)])) }
            guard let items = value.arrayValue, items.allSatisfy({ $0.stringValue != nil }) else { return fail("a list of strings") }
            return .success(value)
        case .inputFile:
            guard let path = value.stringValue else { return fail("a file path") }
            let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : projectDirectory.appendingPathComponent(path)
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue else {
                return .failure(ParameterError("file '\(path)' does not exist (looked for \(url.standardizedFileURL.path))"))
            }
            return .success(value)
        case .dataset:
            guard let reference = value.stringValue else { return fail("a dataset name or NAME:SPLIT") }
            if datasets[reference] != nil { return .success(value) }
            do {
                _ = try DatasetSpec(shorthand: reference)
                return .success(value)
            } catch {
                let declared = datasets.keys.sorted()
                return .failure(ParameterError("'\(reference)' is neither a dataset declared under 'datasets:'" + (declared.isEmpty ? "" : " (\(declared.joined(separator: ", ")))") + " nor NAME:SPLIT: \(error)" + Suggestion.didYouMean(reference, among: declared)))
            }
        }
    }

    // MARK: - Ordering and expansion

    /// Kahn's algorithm, taking ready stages in the order they were written so plans read like manifests.
    private func topologicalOrder(_ stages: [StageDeclaration]) -> [StageDeclaration] {
        var remaining = stages
        var done = Set<String>()
        var order: [StageDeclaration] = []
        while !remaining.isEmpty {
            guard let index = remaining.firstIndex(where: { $0.needs.allSatisfy(done.contains) }) else { break }
            let stage = remaining.remove(at: index)
            done.insert(stage.id)
            order.append(stage)
        }
        return order
    }

    private func combinations(of names: [String], in matrix: [MatrixAxis]) -> [[(name: String, value: JSONValue)]] {
        var result: [[(name: String, value: JSONValue)]] = [[]]
        for name in names {
            let values = matrix.first { $0.name == name }!.values
            result = result.flatMap { prefix in values.map { prefix + [(name, $0)] } }
        }
        return result
    }

    static func instanceName(_ id: String, _ combination: [(name: String, value: JSONValue)]) -> String {
        combination.isEmpty ? id : id + "[" + combination.map { "\($0.name)=\($0.value)" }.joined(separator: ",") + "]"
    }
}

/// Problems of stage instances, one diagnostic per distinct problem: the same message at the same place from many
/// matrix instances (a 1,000-instance sweep with one bad parameter) is printed once, with how many instances have it.
struct InstanceDiagnostics {
    private struct Problem: Hashable {
        let location: SourceLocation?
        let stage: String
        /// The text after `stage '<instance>'`: ", parameter 'x': …" or ": …".
        let text: String
    }
    private var order: [Problem] = []
    private var instances: [Problem: [String]] = [:]

    mutating func add(_ location: SourceLocation?, stage: String, instance: String, _ text: String) {
        let problem = Problem(location: location, stage: stage, text: text)
        if instances[problem] == nil { order.append(problem) }
        instances[problem, default: []].append(instance)
    }

    var diagnostics: [ManifestDiagnostic] {
        order.map { problem in
            let names = instances[problem]!
            guard names.count > 1 else { return ManifestDiagnostic(problem.location, "stage '\(names[0])'\(problem.text)") }
            let shown = names.prefix(3).joined(separator: ", ") + (names.count > 3 ? ", …" : "")
            return ManifestDiagnostic(problem.location, "stage '\(problem.stage)' (\(names.count) matrix instances: \(shown))\(problem.text)")
        }
    }
}

public struct ParameterError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// `${matrix.NAME}` references inside parameter values.
enum MatrixReference {
    static let pattern = #"\$\{matrix\.([A-Za-z0-9_-]+)\}"#

    static func names(in value: JSONValue) -> [String] {
        switch value {
        case .string(let text):
            let regex = try! NSRegularExpression(pattern: pattern)
            return regex.matches(in: text, range: NSRange(text.startIndex..., in: text)).compactMap { match in
                Range(match.range(at: 1), in: text).map { String(text[$0]) }
            }
        case .array(let items): return items.flatMap(names(in:))
        case .object(let members): return members.values.flatMap(names(in:))
        default: return []
        }
    }

    /// A value that is exactly one reference takes the matrix value with its type (`bits: ${matrix.bits}` → 4);
    /// a reference inside a longer string is spliced in as text.
    static func substitute(_ value: JSONValue, with combination: [(name: String, value: JSONValue)]) -> JSONValue {
        switch value {
        case .string(let text):
            for (name, replacement) in combination where text == "${matrix.\(name)}" { return replacement }
            var result = text
            for (name, replacement) in combination {
                result = result.replacingOccurrences(of: "${matrix.\(name)}", with: replacement.description)
            }
            return .string(result)
        case .array(let items): return .array(items.map { substitute($0, with: combination) })
        case .object(let members): return .object(members.mapValues { substitute($0, with: combination) })
        default: return value
        }
    }
}
