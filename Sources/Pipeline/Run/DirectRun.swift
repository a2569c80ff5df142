import Foundation
import Datasets

/// Runs one stage kind outside any manifest and cache — what the plain subcommands (`qatflow convert ...`) do.
/// Parameters are checked exactly as in a manifest, and the named artifacts are copied to the requested paths
/// atomically.
public struct DirectRun {
    public let kind: StageKind
    public let projectDirectory: URL
    public let quiet: Bool
    /// Where checkpoints of long stages go, one folder per key (kind, parameters, input model digests, engine),
    /// so a killed command resumes when run again with the same arguments. nil: a folder inside the run's
    /// scratch directory, removed with it (no resume).
    public let checkpointRoot: URL?

    public init(kind: StageKind, projectDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath), quiet: Bool = false,
                checkpointRoot: URL? = nil) {
        self.kind = kind
        self.projectDirectory = projectDirectory
        self.quiet = quiet
        self.checkpointRoot = checkpointRoot
    }

    /// - Parameters:
    ///   - parameters: given values; defaults fill the rest.
    ///   - inputModels: files handed to the stage as upstream `model` artifacts.
    ///   - destinations: artifact name → where to copy it.
    ///   - datasets: named datasets that dataset parameters may refer to (as a manifest's `datasets:`), e.g. a
    ///     split limited to its first N images.
    public func run(parameters: [String: JSONValue], inputModels: [URL] = [], destinations: [String: URL] = [:],
                    datasets: [String: DatasetSpec] = [:]) throws -> StageResult {
        let planner = Planner(registry: StageRegistry([kind]), projectDirectory: projectDirectory)
        var checked: [String: JSONValue] = [:]
        var problems: [String] = []
        for name in parameters.keys where kind.parameter(named: name) == nil {
            problems.append("unknown parameter '\(name)' for '\(kind.name)'")
        }
        for spec in kind.parameters {
            guard let value = parameters[spec.name] ?? spec.defaultValue else {
                problems.append("missing required parameter '\(spec.name)': \(spec.help)")
                continue
            }
            switch planner.checked(value, against: spec, datasets: datasets) {
            case .success(let normalised): checked[spec.name] = normalised
            case .failure(let error): problems.append("\(spec.name): \(error)")
            }
        }
        if problems.isEmpty { problems = kind.check(checked, inputModels.count).map(\.description) }
        if !problems.isEmpty { throw StageFailure(problems.joined(separator: "\n")) }

        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-\(kind.name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let inputs = inputModels.enumerated().map { index, url in
            StageInput(stageID: inputModels.count == 1 ? url.deletingPathExtension().lastPathComponent : "model\(index + 1)",
                       kind: "file", artifacts: ["model": url], metrics: [:])
        }
        let checkpoints = try checkpointRoot.map {
            $0.appendingPathComponent(try key(parameters: checked, inputModels: inputModels, datasets: datasets))
        }
        let context = StageContext(stageID: kind.name, parameters: checked, inputs: inputs, outputDirectory: scratch,
                                   projectDirectory: projectDirectory, datasets: datasets,
                                   progress: ProgressReporter(prefix: kind.name, quiet: quiet),
                                   checkpointDirectory: checkpoints,
                                   log: { [quiet, name = kind.name] message in
                                       if !quiet { FileHandle.standardError.write(Data("\(name): \(message)\n".utf8)) }
                                   })
        let result = try kind.run(context)
        for (artifact, destination) in destinations {
            guard let fileName = result.artifacts[artifact] else {
                throw StageFailure("'\(kind.name)' produced no artifact '\(artifact)'")
            }
            try ArtifactStore.copyAtomically(scratch.appendingPathComponent(fileName), to: destination)
        }
        if let checkpoints { try? FileManager.default.removeItem(at: checkpoints) }
        return result
    }

    /// Like a stage key: the same command on the same files gets the same checkpoint folder.
    private func key(parameters: [String: JSONValue], inputModels: [URL], datasets: [String: DatasetSpec]) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let material: JSONValue = .object([
            "datasets": try JSONDecoder().decode(JSONValue.self, from: encoder.encode(datasets)),
            "engine": .string(QatflowVersion.string),
            "kind": .string(kind.name),
            "parameters": .object(parameters),
            "inputs": .array(try inputModels.map { url in
                guard FileManager.default.isReadableFile(atPath: url.path) else {
                    throw StageFailure("cannot open model '\(url.path)': no such file or not readable")
                }
                return .string(try Digest.ofFile(at: url))
            }),
        ])
        return Digest.of(material.canonical)
    }
}
