import Foundation
import Datasets
import Graph

/// What a stage parameter holds. The type drives manifest validation, `--set` parsing, CLI flags and
/// how the parameter enters the stage key (an `inputFile` enters by the digest of the file's content).
public enum ParameterType: Sendable, Equatable {
    case string
    case int
    case double
    case bool
    /// One of a fixed set of words.
    case choice([String])
    /// A list of strings (e.g. layer names to skip).
    case stringList
    /// A file inside the project (relative path). Its content digest is part of the stage key.
    case inputFile
    /// A dataset: the name of an entry in the manifest's `datasets:` or a `NAME:SPLIT` shorthand.
    case dataset

    public var displayName: String {
        switch self {
        case .string: return "string"
        case .int: return "integer"
        case .double: return "number"
        case .bool: return "boolean"
        case .choice(let words): return "one of " + words.joined(separator: "|")
        case .stringList: return "list of strings"
        case .inputFile: return "path"
        case .dataset: return "dataset"
        }
    }
}

/// One parameter a stage kind accepts in its `with:` block.
public struct ParameterSpec: Sendable {
    public let name: String
    public let type: ParameterType
    /// nil means the parameter is required.
    public let defaultValue: JSONValue?
    public let help: String

    public init(_ name: String, _ type: ParameterType, default defaultValue: JSONValue? = nil, help: String) {
        self.name = name
        self.type = type
        self.defaultValue = defaultValue
        self.help = help
    }
}

/// How many upstream stages (`needs:`) a stage kind consumes and what it expects from them.
public enum InputRule: Sendable, Equatable {
    /// Works from its parameters alone (e.g. `convert` reads an ONNX file named in `with:`).
    case none
    /// Exactly one upstream stage that produced a `model` artifact.
    case oneModel
    /// One or more upstream stages with `model` artifacts (e.g. `evaluate` compares them).
    case models
    /// Any upstream stages; the stage decides, through its `check` (e.g. `train`: a model builder or one
    /// upstream model) or at run time (test-only kinds).
    case any
}

/// A problem `StageKind.check` finds in a stage's parameters, naming the parameter at fault so the manifest
/// error can point at its line and column (nil: the stage as a whole).
public struct ParameterProblem: Sendable, Equatable, CustomStringConvertible {
    public let parameter: String?
    public let message: String

    public init(_ parameter: String?, _ message: String) {
        self.parameter = parameter
        self.message = message
    }

    public var description: String { parameter.map { "parameter '\($0)': \(message)" } ?? message }
}

/// What a finished stage hands back: files it wrote into its output directory, named, and its metrics.
public struct StageResult: Sendable {
    /// Artifact name → file name relative to `StageContext.outputDirectory`.
    public var artifacts: [String: String]
    public var metrics: [String: JSONValue]

    public init(artifacts: [String: String] = [:], metrics: [String: JSONValue] = [:]) {
        self.artifacts = artifacts
        self.metrics = metrics
    }

    /// The metric holding a stage's warnings (an array of sentences): recorded with the other metrics, so a cached
    /// stage warns again, and printed on lines of their own by the runner and the plain commands.
    public static let warningsMetric = "warnings"

    /// `skipped_images` and a warning naming the first, when a dataset read under `on_error: skip` left images out.
    public static func skippedImageMetrics(_ data: any ImageDataset) -> [String: JSONValue] {
        let skipped = data.skippedImages
        guard !skipped.isEmpty else { return [:] }
        return ["skipped_images": .int(skipped.count),
                warningsMetric: .array([.string("\(skipped.count) of \(data.count) images were skipped (on_error: skip); the first: \(skipped[0])")])]
    }

    public static func warnings(in metrics: [String: JSONValue]) -> [String] {
        metrics[warningsMetric]?.arrayValue?.compactMap(\.stringValue) ?? []
    }
}

/// The artifacts and metrics of an upstream stage, as a downstream stage sees them.
public struct StageInput: Sendable {
    public let stageID: String
    public let kind: String
    /// Artifact name → file (read-only; inside the cache).
    public let artifacts: [String: URL]
    public let metrics: [String: JSONValue]

    public init(stageID: String, kind: String, artifacts: [String: URL], metrics: [String: JSONValue]) {
        self.stageID = stageID
        self.kind = kind
        self.artifacts = artifacts
        self.metrics = metrics
    }
}

/// A stage kind: its name, its parameters and the function that does the work. Stage kinds are data the
/// runner looks up by name; the runner knows nothing about what any of them computes.
public struct StageKind: Sendable {
    public let name: String
    public let summary: String
    public let parameters: [ParameterSpec]
    public let inputs: InputRule
    /// Checks that one parameter's type cannot express — values that depend on each other (`epochs` or `steps`,
    /// not both) or on the number of upstream stages. Called by the planner with type-checked parameters
    /// (defaults filled in) and the number of `needs:`, so a problem is reported as `file:line:column` before
    /// any work starts.
    public let check: @Sendable (_ parameters: [String: JSONValue], _ upstreamStages: Int) -> [ParameterProblem]
    /// Checks against what the upstream stages will produce, as far as their kinds and parameters tell (e.g.
    /// `quantize`'s BN re-estimation needs BatchNorm nodes, which `convert` without `for_training` folds away).
    /// Called by the planner after `check`, with the upstream instances in `needs:` order; plain commands have
    /// no upstream stages, so their stage must still check the input at run time.
    public let checkUpstream: @Sendable (_ parameters: [String: JSONValue], _ upstream: [StageInstance]) -> [ParameterProblem]
    public let run: @Sendable (StageContext) throws -> StageResult
    /// What an instance gets unless its manifest stage says `resources:`.
    public let resources: StageResources
    /// Part of every key of this kind. Bump it when a change makes the kind write different outputs for the same
    /// parameters and inputs (Tests/PipelineTests/Golden/stage-digests.json records what each version writes).
    public let version: Int

    public init(name: String, summary: String, version: Int = 1, parameters: [ParameterSpec], inputs: InputRule,
                resources: StageResources = StageResources(),
                check: @escaping @Sendable ([String: JSONValue], Int) -> [ParameterProblem] = { _, _ in [] },
                checkUpstream: @escaping @Sendable ([String: JSONValue], [StageInstance]) -> [ParameterProblem] = { _, _ in [] },
                run: @escaping @Sendable (StageContext) throws -> StageResult) {
        self.name = name
        self.version = version
        self.resources = resources
        self.summary = summary
        self.parameters = parameters
        self.inputs = inputs
        self.check = check
        self.checkUpstream = checkUpstream
        self.run = run
    }

    public func parameter(named name: String) -> ParameterSpec? {
        parameters.first { $0.name == name }
    }
}

/// Everything a running stage may use. Stages write only into `outputDirectory`; the runner moves what they
/// name in `StageResult.artifacts` into the content-addressed cache.
public struct StageContext: Sendable {
    public let stageID: String
    /// Parameters after defaults, `--set` and matrix substitution; types already checked.
    public let parameters: [String: JSONValue]
    public let inputs: [StageInput]
    /// A fresh, empty, private directory.
    public let outputDirectory: URL
    /// The folder of the manifest; relative `inputFile` parameters are resolved against it.
    public let projectDirectory: URL
    /// Datasets declared in the manifest, by name.
    public let datasets: [String: DatasetSpec]
    public let progress: ProgressReporter
    /// Where a long stage keeps checkpoints between runs. The runner gives every stage key its own folder
    /// (`.qatflow/cache/checkpoints/<key>/`) that outlives a killed run, so a re-run of the same stage finds what
    /// the killed one saved; the runner removes it once the stage's record is stored. The folder may not exist
    /// yet. Without a runner it defaults to a folder inside `outputDirectory` (no resume across runs).
    public let checkpointDirectory: URL
    /// One-line messages for the user (resumed from a checkpoint, an epoch finished); printed unless quiet.
    /// Unlike `progress`, these also appear when stderr is not a terminal.
    public let log: @Sendable (String) -> Void
    /// Worker threads the stage should use: its instance's `resources.cpus` (2 outside a pipeline).
    public var threads = 2

    public init(stageID: String, parameters: [String: JSONValue], inputs: [StageInput], outputDirectory: URL,
                projectDirectory: URL, datasets: [String: DatasetSpec], progress: ProgressReporter,
                checkpointDirectory: URL? = nil, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.stageID = stageID
        self.parameters = parameters
        self.inputs = inputs
        self.outputDirectory = outputDirectory
        self.projectDirectory = projectDirectory
        self.datasets = datasets
        self.progress = progress
        self.checkpointDirectory = checkpointDirectory ?? outputDirectory.appendingPathComponent(".checkpoints")
        self.log = log
    }

    public func string(_ name: String) throws -> String {
        guard let value = parameters[name]?.stringValue else { throw missing(name, "a string") }
        return value
    }
    public func optionalString(_ name: String) -> String? { parameters[name]?.stringValue }
    /// An optional integer parameter (declared with default `.null`).
    public func optionalInt(_ name: String) -> Int? { parameters[name]?.intValue }
    public func optionalDouble(_ name: String) -> Double? { parameters[name]?.doubleValue }
    /// An optional dataset parameter (declared with default `.null`), resolved like `dataset(_:)`.
    public func optionalDataset(_ name: String) throws -> DatasetSpec? {
        parameters[name]?.stringValue == nil ? nil : try dataset(name)
    }
    public func int(_ name: String) throws -> Int {
        guard let value = parameters[name]?.intValue else { throw missing(name, "an integer") }
        return value
    }
    public func double(_ name: String) throws -> Double {
        guard let value = parameters[name]?.doubleValue else { throw missing(name, "a number") }
        return value
    }
    public func bool(_ name: String) throws -> Bool {
        guard let value = parameters[name]?.boolValue else { throw missing(name, "a boolean") }
        return value
    }
    public func stringList(_ name: String) throws -> [String] {
        guard let values = parameters[name]?.arrayValue else { throw missing(name, "a list of strings") }
        return values.compactMap(\.stringValue)
    }
    /// An `inputFile` parameter as an absolute URL.
    public func file(_ name: String) throws -> URL {
        let path = try string(name)
        return path.hasPrefix("/") ? URL(fileURLWithPath: path)
            : projectDirectory.appendingPathComponent(path).standardizedFileURL
    }
    /// A `dataset` parameter resolved to its spec: a manifest dataset name or a `NAME:SPLIT` shorthand.
    public func dataset(_ name: String) throws -> DatasetSpec {
        let reference = try string(name)
        if let declared = datasets[reference] { return declared }
        return try DatasetSpec(shorthand: reference)
    }

    /// Opens the dataset named by parameter `name` (see `openDataset(_:)`).
    public func openDataset(_ name: String) throws -> any ImageDataset {
        try openDataset(try dataset(name))
    }

    /// Opens `spec` for reading: in memory when it fits (decoding shown on the progress line), else streaming.
    public func openDataset(_ spec: DatasetSpec) throws -> any ImageDataset {
        var begun = false
        defer { if begun { progress.finish() } }
        return try DatasetLoader.open(spec, projectDirectory: projectDirectory) { done, total in
            if !begun { begun = true; self.progress.begin("decode \(spec.path ?? spec.name)", total: total) }
            self.progress.advanceTo(done)
        }
    }

    /// `graph` with the preprocessing of dataset parameter `name` recorded in its metadata (`eval` and `infer` read it).
    public func recordingPreprocessing(_ graph: Graph, dataset name: String) throws -> Graph {
        var graph = graph
        graph.metadata[ImagePreprocessing.metadataKey] = ImagePreprocessing(try dataset(name)).json
        return graph
    }

    /// The `model` artifact of the single upstream stage.
    public func inputModel() throws -> URL {
        let models = inputModels()
        guard models.count == 1 else {
            throw StageFailure("stage '\(stageID)' needs exactly one upstream stage with a model, found \(models.count)")
        }
        return models[0].url
    }

    /// Every upstream `model` artifact, in `needs:` order.
    public func inputModels() -> [(stageID: String, url: URL)] {
        inputs.compactMap { input in input.artifacts["model"].map { (input.stageID, $0) } }
    }

    private func missing(_ name: String, _ expected: String) -> StageFailure {
        StageFailure("stage '\(stageID)': parameter '\(name)' must be \(expected)")
    }
}

/// An error a stage raises with a message meant for the user.
public struct StageFailure: Error, CustomStringConvertible, LocalizedError {
    public let description: String
    public init(_ description: String) { self.description = description }
    public var errorDescription: String? { description }
}
