import Foundation
import Yams
import Datasets

/// Reads a manifest file into a `Manifest`, checking its structure. It walks Yams' composed node tree rather
/// than decoding with `Codable`, because every node carries its line and column there, so each message can say
/// `file:line:column` — the coding path of a `DecodingError` cannot. All problems are collected, not just the first.
public struct ManifestParser {
    public static let topLevelKeys = ["name", "description", "datasets", "stages", "matrix"]
    public static let stageKeys = ["uses", "needs", "with", "outputs", "resources"]
    public static let datasetKeys = ["source", "split", "limit", "pad", "mean", "std", "root", "path", "labels", "channels", "resize", "crop",
                                     "random_resized_crop", "flip", "on_error", "alpha", "classes", "normal"]

    private let file: String
    private var diagnostics: [ManifestDiagnostic] = []

    private init(file: String) { self.file = file }

    /// Parses the manifest at `url`; `displayName` is how the file is named in messages (default: the path given).
    public static func parse(contentsOf url: URL, displayName: String? = nil) throws -> Manifest {
        let name = displayName ?? url.path
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw ManifestError(nil, "cannot read manifest '\(name)': no such file or not readable")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ManifestError(SourceLocation(file: name, line: 1, column: 1), "manifest is not UTF-8 text")
        }
        return try parse(text, file: name)
    }

    public static func parse(_ text: String, file: String) throws -> Manifest {
        var parser = ManifestParser(file: file)
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw ManifestError([parser.diagnostic(for: error)])
        }
        guard let root else {
            throw ManifestError(SourceLocation(file: file, line: 1, column: 1), "manifest is empty; expected a mapping with 'stages:'")
        }
        let manifest = parser.readManifest(root)
        if !parser.diagnostics.isEmpty { throw ManifestError(parser.diagnostics) }
        return manifest!
    }

    // MARK: - Sections

    private mutating func readManifest(_ root: Node) -> Manifest? {
        guard let mapping = expectMapping(root, what: "the manifest") else { return nil }
        var name = URL(fileURLWithPath: file).deletingPathExtension().lastPathComponent
        var datasets: [DatasetDeclaration] = []
        var stages: [StageDeclaration] = []
        var matrix: [MatrixAxis] = []
        var sawStages = false
        for (key, value) in mapping {
            guard let keyName = keyString(key, allowed: Self.topLevelKeys, context: "manifest") else { continue }
            switch keyName {
            case "name": if let text = expectString(value, what: "'name'") { name = text }
            case "description": _ = expectString(value, what: "'description'")
            case "datasets": datasets = readDatasets(value)
            case "stages": sawStages = true; stages = readStages(value)
            case "matrix": matrix = readMatrix(value)
            default: break
            }
        }
        if !sawStages { report(root, "manifest has no 'stages:' section; expected a mapping of stage id → stage") }
        checkNeeds(stages)
        checkCycles(stages)
        return Manifest(file: file, name: name, datasets: datasets, stages: stages, matrix: matrix)
    }

    private mutating func readDatasets(_ node: Node) -> [DatasetDeclaration] {
        guard let mapping = expectMapping(node, what: "'datasets'") else { return [] }
        var result: [DatasetDeclaration] = []
        for (key, value) in mapping {
            guard let name = expectString(key, what: "a dataset name"), let fields = expectMapping(value, what: "dataset '\(name)'") else { continue }
            var source: String?, split: DatasetSplit?, limit: Int?, pad: Int?, mean: [Double]?, std: [Double]?, root: String?
            var path: String?, channels: ImageChannels?, resize: ImageResize?, crop: Int?, onError: ImageErrorPolicy?, alpha: AlphaPolicy?, classes: String?
            var labels: String?, randomResizedCrop: Int?, flip: Bool?, normal: [Double]?, normalNode: Node?
            var imageOnlyField: (String, Node)?
            for (fieldKey, fieldValue) in fields {
                guard let field = keyString(fieldKey, allowed: Self.datasetKeys, context: "dataset '\(name)'") else { continue }
                if ["path", "labels", "channels", "resize", "crop", "random_resized_crop", "flip", "on_error", "alpha", "classes"].contains(field), imageOnlyField == nil { imageOnlyField = (field, fieldKey) }
                switch field {
                case "source":
                    if let text = expectString(fieldValue, what: "'source'") {
                        if DatasetSpec.sourceNames.contains(text) { source = text } else {
                            report(fieldValue, "unknown dataset source '\(text)'; expected one of \(DatasetSpec.sourceNames.joined(separator: ", "))" + Suggestion.didYouMean(text, among: DatasetSpec.sourceNames))
                        }
                    }
                case "split":
                    if let text = expectString(fieldValue, what: "'split'") {
                        if let value = DatasetSplit(rawValue: text) { split = value } else {
                            report(fieldValue, "unknown split '\(text)'; expected train or test")
                        }
                    }
                case "limit": limit = expectInt(fieldValue, what: "'limit'", minimum: 1)
                case "pad": pad = expectInt(fieldValue, what: "'pad'", minimum: 0)
                case "mean": mean = expectNumbers(fieldValue, what: "'mean'")
                case "std": std = expectNumbers(fieldValue, what: "'std'")
                case "root": root = expectString(fieldValue, what: "'root'")
                case "path": path = expectString(fieldValue, what: "'path'")
                case "classes": classes = expectString(fieldValue, what: "'classes'")
                case "labels": labels = expectString(fieldValue, what: "'labels'")
                case "normal": normal = expectNumbers(fieldValue, what: "'normal'"); normalNode = fieldValue
                case "random_resized_crop": randomResizedCrop = expectInt(fieldValue, what: "'random_resized_crop'", minimum: 1)
                case "flip":
                    if case .scalar = fieldValue, case .bool(let value)? = jsonValue(fieldValue) { flip = value } else {
                        report(fieldValue, "'flip' must be true or false; found \(describe(fieldValue))")
                    }
                case "crop": crop = expectInt(fieldValue, what: "'crop'", minimum: 1)
                case "channels": channels = expectChoice(fieldValue, what: "'channels'", ImageChannels.self)
                case "on_error": onError = expectChoice(fieldValue, what: "'on_error'", ImageErrorPolicy.self)
                case "alpha": alpha = expectChoice(fieldValue, what: "'alpha'", AlphaPolicy.self)
                case "resize":
                    if case .sequence(let pair) = fieldValue {
                        let sides = pair.compactMap { expectInt($0, what: "each side of 'resize'", minimum: 1) }
                        if sides.count == 2 { resize = .exact(height: sides[0], width: sides[1]) } else if sides.count == pair.count {
                            report(fieldValue, "'resize' must be one number (the shorter side) or [HEIGHT, WIDTH]; found \(pair.count) numbers")
                        }
                    } else if let side = expectInt(fieldValue, what: "'resize' (the shorter side, or [HEIGHT, WIDTH])", minimum: 1) {
                        resize = .shorterSide(side)
                    }
                default: break
                }
            }
            if source == nil, !fields.keys.contains(where: { $0.string == "source" }) { report(value, "dataset '\(name)' needs 'source:' (one of \(DatasetSpec.sourceNames.joined(separator: ", ")))") }
            guard let source else { continue }
            // MNN's config: mean on 0–255 and `normal` = 1/std on 0–255.
            if let normal, let normalNode {
                guard std == nil else { report(normalNode, "dataset '\(name)': give 'std' (on pixel/255) or MNN's 'normal' (on 0–255), not both"); continue }
                do { (mean, std) = try DatasetSpec.fromMNN(mean: mean ?? [0], normal: normal) } catch {
                    report(normalNode, "dataset '\(name)': \(error)"); continue
                }
            }
            let isImageSource = DatasetSpec.imageSourceNames.contains(source)
            if !isImageSource, let (field, node) = imageOnlyField {
                report(node, "dataset '\(name)': '\(field)' applies to \(DatasetSpec.imageSourceNames.joined(separator: ", ")) sources, not to \(source) (an IDX shortcut with its fixed preprocessing)")
                continue
            }
            let needsPath = isImageSource && source != "cifar10"
            if needsPath, path == nil, !fields.keys.contains(where: { $0.string == "path" }) {
                let what = ["image-folder": "the folder of class subfolders or of images", "image-list": "the text file of 'path LABEL' lines",
                            "npy": "the .npz file with images and labels, or a .npy of images", "idx": "the IDX images file; its labels file goes in 'labels:'"][source] ?? "the files"
                report(value, "dataset '\(name)' (\(source)) needs 'path:' (\(what))")
                continue
            }
            if !needsPath, split == nil, !fields.keys.contains(where: { $0.string == "split" }) { report(value, "dataset '\(name)' needs 'split:' (train or test)") }
            do {
                let spec: DatasetSpec
                if isImageSource {
                    if needsPath, path == nil { continue }
                    if !needsPath, split == nil { continue }
                    spec = try DatasetSpec(imageSource: source, path: path, split: needsPath ? nil : split, labels: labels, limit: limit,
                                           channels: channels, resize: resize, crop: crop,
                                           pad: pad ?? 0, mean: mean, std: std, root: root, classes: classes, onError: onError, alpha: alpha,
                                           randomResizedCrop: randomResizedCrop, flip: flip)
                } else {
                    guard let split else { continue }
                    spec = try DatasetSpec(name: source, split: split, limit: limit, pad: pad ?? 2, mean: mean?.first, std: std?.first, root: root)
                    if (mean?.count ?? 1) != 1 || (std?.count ?? 1) != 1 {
                        report(value, "dataset '\(name)': \(source) has one channel: mean and std take one number")
                        continue
                    }
                }
                result.append(DatasetDeclaration(name: name, spec: spec, location: location(key)))
            } catch {
                report(value, "dataset '\(name)': \(error)")
            }
        }
        return result
    }

    private mutating func readStages(_ node: Node) -> [StageDeclaration] {
        guard let mapping = expectMapping(node, what: "'stages'") else { return [] }
        if mapping.count == 0 { report(node, "'stages' is empty; expected at least one stage") }
        var result: [StageDeclaration] = []
        for (key, value) in mapping {
            guard let id = expectString(key, what: "a stage id") else { continue }
            if !Self.isValidStageID(id) {
                report(key, "stage id '\(id)' may contain only letters, digits, '-' and '_'")
                continue
            }
            guard let fields = expectMapping(value, what: "stage '\(id)'") else { continue }
            var kind: String?, kindLocation = location(value)
            var needs: [String] = [], needsLocations: [SourceLocation] = []
            var parameters: [String: ParameterEntry] = [:]
            var outputs: [String: String] = [:]
            var resources = ResourceOverrides()
            for (fieldKey, fieldValue) in fields {
                guard let field = keyString(fieldKey, allowed: Self.stageKeys, context: "stage '\(id)'") else { continue }
                switch field {
                case "uses":
                    kind = expectString(fieldValue, what: "'uses' (a stage kind)")
                    kindLocation = location(fieldValue)
                case "needs":
                    for item in stringOrList(fieldValue, what: "'needs'") {
                        needs.append(item.0)
                        needsLocations.append(item.1)
                    }
                case "with":
                    guard let params = expectMapping(fieldValue, what: "'with'") else { continue }
                    for (paramKey, paramValue) in params {
                        guard let paramName = expectString(paramKey, what: "a parameter name") else { continue }
                        if let value = jsonValue(paramValue) {
                            parameters[paramName] = ParameterEntry(value: value, location: location(paramValue))
                        }
                    }
                case "resources":
                    resources = readResources(fieldValue)
                case "outputs":
                    guard let entries = expectMapping(fieldValue, what: "'outputs' (artifact name → path)") else { continue }
                    for (artifactKey, pathNode) in entries {
                        guard let artifact = expectString(artifactKey, what: "an artifact name"),
                              let path = expectString(pathNode, what: "an output path") else { continue }
                        if let problem = Self.problemWithOutputPath(path) {
                            report(pathNode, "output path '\(path)' \(problem)")
                        } else {
                            outputs[artifact] = path
                        }
                    }
                default: break
                }
            }
            guard let kind else {
                if !fields.keys.contains(where: { $0.string == "uses" }) { report(value, "stage '\(id)' needs 'uses:' naming its stage kind") }
                continue
            }
            result.append(StageDeclaration(id: id, kind: kind, needs: needs, parameters: parameters, outputs: outputs,
                                           location: location(key), kindLocation: kindLocation, needsLocations: needsLocations,
                                           resources: resources))
        }
        return result
    }

    private mutating func readMatrix(_ node: Node) -> [MatrixAxis] {
        guard let mapping = expectMapping(node, what: "'matrix' (name → list of values)") else { return [] }
        var axes: [MatrixAxis] = []
        for (key, value) in mapping {
            guard let name = expectString(key, what: "a matrix name") else { continue }
            guard case .sequence(let sequence) = value else {
                report(value, "matrix '\(name)' must be a list of values, e.g. [4, 8]; found \(describe(value))")
                continue
            }
            var values: [JSONValue] = []
            for item in sequence {
                guard case .scalar = item, let json = jsonValue(item) else {
                    report(item, "matrix '\(name)' values must be scalars (numbers, strings, booleans); found \(describe(item))")
                    continue
                }
                if let duplicate = MatrixAxis.duplicateProblem(name: name, value: json, among: values) {
                    report(item, duplicate)
                    continue
                }
                values.append(json)
            }
            if values.isEmpty { report(value, "matrix '\(name)' is empty; expected at least one value") }
            axes.append(MatrixAxis(name: name, values: values, location: location(key)))
        }
        return axes
    }

    // MARK: - Graph checks

    private mutating func checkNeeds(_ stages: [StageDeclaration]) {
        let ids = stages.map(\.id)
        for stage in stages {
            for (need, place) in zip(stage.needs, stage.needsLocations) {
                if need == stage.id {
                    diagnostics.append(ManifestDiagnostic(place, "stage '\(stage.id)' needs itself"))
                } else if !ids.contains(need) {
                    diagnostics.append(ManifestDiagnostic(place, "stage '\(stage.id)' needs '\(need)', which is not a stage in this manifest" + Suggestion.didYouMean(need, among: ids)))
                }
            }
        }
    }

    /// Reports each cycle once, printed as `a -> b -> c -> a`.
    private mutating func checkCycles(_ stages: [StageDeclaration]) {
        let byID = Dictionary(stages.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        var state: [String: Int] = [:] // 1 visiting, 2 done
        var path: [String] = []
        func visit(_ id: String) -> [String]? {
            if state[id] == 2 { return nil }
            if state[id] == 1 {
                let start = path.firstIndex(of: id)!
                return Array(path[start...]) + [id]
            }
            state[id] = 1
            path.append(id)
            for need in byID[id]?.needs ?? [] where byID[need] != nil && need != id {
                if let cycle = visit(need) { return cycle }
            }
            path.removeLast()
            state[id] = 2
            return nil
        }
        for stage in stages where state[stage.id] == nil {
            path = []
            if let cycle = visit(stage.id) {
                // `needs` points from a stage to what it depends on; print in dependency order.
                let first = byID[cycle[0]]!
                diagnostics.append(ManifestDiagnostic(first.location, "dependency cycle: " + cycle.joined(separator: " -> ") + " (each stage needs the next)"))
                for id in cycle { state[id] = 2 }
            }
        }
    }

    // MARK: - Paths and ids

    static func isValidStageID(_ id: String) -> Bool {
        !id.isEmpty && id.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || $0 == "-" || $0 == "_" }
    }

    /// Output paths must stay inside the project: relative, no `..` component.
    static func problemWithOutputPath(_ path: String) -> String? {
        if path.isEmpty { return "is empty" }
        if path.hasPrefix("/") || path.hasPrefix("~") { return "is absolute; outputs must be paths inside the project (relative, without '..')" }
        if path.split(separator: "/").contains("..") { return "leaves the project through '..'; outputs must be paths inside the project" }
        if path.hasSuffix("/") { return "names a directory; expected a file path" }
        return nil
    }

    // MARK: - Node helpers

    private func location(_ node: Node) -> SourceLocation {
        SourceLocation(file: file, line: node.mark?.line ?? 1, column: node.mark?.column ?? 1)
    }

    private mutating func report(_ node: Node, _ message: String) {
        diagnostics.append(ManifestDiagnostic(location(node), message))
    }

    private func diagnostic(for error: YamlError) -> ManifestDiagnostic {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let contextText = context.map { "\($0.text) " } ?? ""
            return ManifestDiagnostic(SourceLocation(file: file, line: mark.line, column: mark.column),
                                      "YAML syntax: \(contextText)\(problem)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ManifestDiagnostic(SourceLocation(file: file, line: context.mark.line, column: context.mark.column),
                                      "duplicate key \(duplicates.sorted().map { "'\($0)'" }.joined(separator: ", ")) in one mapping")
        default:
            return ManifestDiagnostic(SourceLocation(file: file, line: 1, column: 1), "YAML: \(error)")
        }
    }

    private func describe(_ node: Node) -> String {
        switch node {
        case .scalar(let scalar): return "\(jsonValue(node)?.typeName ?? "scalar") '\(scalar.string)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }

    private mutating func keyString(_ node: Node, allowed: [String], context: String) -> String? {
        guard case .scalar(let scalar) = node else {
            report(node, "keys in \(context) must be plain words; found \(describe(node))")
            return nil
        }
        guard allowed.contains(scalar.string) else {
            report(node, "unknown key '\(scalar.string)' in \(context); expected one of \(allowed.joined(separator: ", "))"
                   + Suggestion.didYouMean(scalar.string, among: allowed))
            return nil
        }
        return scalar.string
    }

    private mutating func expectMapping(_ node: Node, what: String) -> Node.Mapping? {
        if case .mapping(let mapping) = node { return mapping }
        report(node, "\(what) must be a mapping (key: value lines); found \(describe(node))")
        return nil
    }

    /// `resources: {cpus: 8, mem: 16G, time: 30m}`.
    private mutating func readResources(_ node: Node) -> ResourceOverrides {
        var resources = ResourceOverrides()
        guard let fields = expectMapping(node, what: "'resources' (cpus, mem, time)") else { return resources }
        for (key, value) in fields {
            guard let field = keyString(key, allowed: ["cpus", "mem", "time"], context: "'resources'") else { continue }
            let text: String? = {
                if case .scalar = value, let json = jsonValue(value) { return json.stringValue ?? json.intValue.map(String.init) }
                return nil
            }()
            switch field {
            case "cpus": resources.cpus = expectInt(value, what: "'cpus'", minimum: 1)
            case "mem":
                if let memory = text.flatMap(StageResources.parseMemory) { resources.memoryMB = memory } else {
                    report(value, "'mem' must be a size such as 16G or 512M; found \(describe(value))")
                }
            case "time":
                if let minutes = text.flatMap(StageResources.parseTime) { resources.minutes = minutes } else {
                    report(value, "'time' must be a duration such as 30m, 2h, 1h30m or 01:30:00; found \(describe(value))")
                }
            default: break
            }
        }
        return resources
    }

    private mutating func expectString(_ node: Node, what: String) -> String? {
        if case .scalar = node, case .string(let text)? = jsonValue(node) { return text }
        report(node, "\(what) must be a string; found \(describe(node))")
        return nil
    }

    private mutating func expectInt(_ node: Node, what: String, minimum: Int) -> Int? {
        guard let value = jsonValue(node)?.intValue, case .scalar = node else {
            report(node, "\(what) must be an integer; found \(describe(node))")
            return nil
        }
        guard value >= minimum else {
            report(node, "\(what) must be ≥ \(minimum); found \(value)")
            return nil
        }
        return value
    }

    private mutating func expectNumber(_ node: Node, what: String) -> Double? {
        guard case .scalar = node, let value = jsonValue(node)?.doubleValue else {
            report(node, "\(what) must be a number; found \(describe(node))")
            return nil
        }
        return value
    }

    /// One number (for every channel) or a list of numbers (one per channel).
    private mutating func expectNumbers(_ node: Node, what: String) -> [Double]? {
        if case .sequence(let items) = node {
            let numbers = items.compactMap { expectNumber($0, what: "each value of \(what)") }
            guard numbers.count == items.count else { return nil }
            guard !numbers.isEmpty else { report(node, "\(what) is empty; give one number or one per channel"); return nil }
            return numbers
        }
        return expectNumber(node, what: "\(what) (one number, or one per channel)").map { [$0] }
    }

    private mutating func expectChoice<Choice: RawRepresentable & CaseIterable>(_ node: Node, what: String, _: Choice.Type) -> Choice? where Choice.RawValue == String {
        guard let text = expectString(node, what: what) else { return nil }
        guard let choice = Choice(rawValue: text) else {
            let names = Choice.allCases.map(\.rawValue)
            report(node, "unknown \(what) '\(text)'; expected one of \(names.joined(separator: ", "))" + Suggestion.didYouMean(text, among: names))
            return nil
        }
        return choice
    }

    private mutating func stringOrList(_ node: Node, what: String) -> [(String, SourceLocation)] {
        switch node {
        case .scalar:
            if let text = expectString(node, what: what) { return [(text, location(node))] }
            return []
        case .sequence(let sequence):
            var items: [(String, SourceLocation)] = []
            for item in sequence {
                if let text = expectString(item, what: "each entry of \(what)") { items.append((text, location(item))) }
            }
            return items
        default:
            report(node, "\(what) must be a stage id or a list of stage ids; found \(describe(node))")
            return []
        }
    }

    /// A YAML node as a JSON value. Only plain (unquoted) scalars are typed; quoted ones stay strings.
    private func jsonValue(_ node: Node) -> JSONValue? {
        switch node {
        case .scalar(let scalar):
            return Self.typedScalar(scalar.string, plain: scalar.style == .plain)
        case .sequence(let sequence):
            return .array(sequence.compactMap { jsonValue($0) })
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, value) in mapping { if let name = key.string, let json = jsonValue(value) { object[name] = json } }
            return .object(object)
        case .alias:
            return nil
        }
    }

    /// YAML 1.2 core-schema typing of a scalar: null, true/false, integers, floats, otherwise a string.
    static func typedScalar(_ text: String, plain: Bool) -> JSONValue {
        guard plain else { return .string(text) }
        switch text {
        case "", "~", "null", "Null", "NULL": return .null
        case "true", "True", "TRUE": return .bool(true)
        case "false", "False", "FALSE": return .bool(false)
        default: break
        }
        if let value = Int(text) { return .int(value) }
        let floatPattern = text.range(of: #"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"#, options: .regularExpression)
        if floatPattern != nil, let value = Double(text) { return .double(value) }
        return .string(text)
    }
}
