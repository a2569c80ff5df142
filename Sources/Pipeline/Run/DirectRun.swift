import Foundation

/// Runs one stage kind outside any manifest and cache — what the plain subcommands (`qatflow convert ...`) do.
/// Parameters are checked exactly as in a manifest, and the named artifacts are copied to the requested paths
/// atomically.
public struct DirectRun {
    public let kind: StageKind
    public let projectDirectory: URL
    public let quiet: Bool

    public init(kind: StageKind, projectDirectory: URL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath), quiet: Bool = false) {
        self.kind = kind
        self.projectDirectory = projectDirectory
        self.quiet = quiet
    }

    /// - Parameters:
    ///   - parameters: given values; defaults fill the rest.
    ///   - inputModels: files handed to the stage as upstream `model` artifacts.
    ///   - destinations: artifact name → where to copy it.
    public func run(parameters: [String: JSONValue], inputModels: [URL] = [], destinations: [String: URL] = [:]) throws -> StageResult {
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
            switch planner.checked(value, against: spec, datasets: [:]) {
            case .success(let normalised): checked[spec.name] = normalised
            case .failure(let error): problems.append("\(spec.name): \(error)")
            }
        }
        if !problems.isEmpty { throw StageFailure(problems.joined(separator: "\n")) }

        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-\(kind.name)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        let inputs = inputModels.enumerated().map { index, url in
            StageInput(stageID: inputModels.count == 1 ? url.deletingPathExtension().lastPathComponent : "model\(index + 1)",
                       kind: "file", artifacts: ["model": url], metrics: [:])
        }
        let context = StageContext(stageID: kind.name, parameters: checked, inputs: inputs, outputDirectory: scratch,
                                   projectDirectory: projectDirectory, datasets: [:],
                                   progress: ProgressReporter(prefix: kind.name, quiet: quiet))
        let result = try kind.run(context)
        for (artifact, destination) in destinations {
            guard let fileName = result.artifacts[artifact] else {
                throw StageFailure("'\(kind.name)' produced no artifact '\(artifact)'")
            }
            try ArtifactStore.copyAtomically(scratch.appendingPathComponent(fileName), to: destination)
        }
        return result
    }
}
