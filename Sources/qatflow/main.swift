import ArgumentParser
import Foundation
import Pipeline

/// The `qatflow` command line: argument parsing and printing only; all work is in the Pipeline target.
struct Qatflow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qatflow",
        abstract: "Quantize CNNs: convert ONNX, calibrate, quantization-aware training, int8 inference, export.",
        version: QatflowVersion.string,
        subcommands: [RunCommand.self, PlanCommand.self, StatusCommand.self, ShowCommand.self, ReportCommand.self, GCCommand.self,
                      StagesCommand.self, ConvertCommand.self, InspectCommand.self, InferCommand.self, EvalCommand.self, BenchCommand.self, BenchTrainCommand.self, QuantizeCommand.self, TrainCommand.self, QATCommand.self, ExportCommand.self]
    )
}

/// Options shared by commands that read a manifest.
struct ManifestOptions: ParsableArguments {
    @Argument(help: "The pipeline manifest (YAML).")
    var manifest: String

    @Argument(help: "Stages to run (ids, or instance names such as 'qat[bits=4]') together with the stages they need; default: every stage.")
    var targets: [String] = []

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a parameter: STAGE.PARAM=VALUE, or matrix.NAME=[v1,v2]. Repeatable.", valueName: "STAGE.PARAM=VALUE"))
    var overrides: [String] = []

    @Option(help: "Project directory: relative paths in the manifest are resolved here. Default: the current directory.")
    var project: String?

    @Option(name: .customLong("cache-dir"), help: "Cache and run records. Default: PROJECT/.qatflow")
    var cacheDirectory: String?

    var projectURL: URL {
        URL(fileURLWithPath: project ?? FileManager.default.currentDirectoryPath).standardizedFileURL
    }

    var store: ArtifactStore {
        ArtifactStore(root: cacheDirectory.map { URL(fileURLWithPath: $0).standardizedFileURL }
                      ?? projectURL.appendingPathComponent(".qatflow"))
    }

    func makePlan() throws -> Plan {
        let manifestURL = URL(fileURLWithPath: manifest)
        let parsed = try ManifestParser.parse(contentsOf: manifestURL, displayName: manifest)
        let overrides = try self.overrides.map(Override.init(parsing:))
        return try Planner(registry: .production, projectDirectory: projectURL).plan(parsed, overrides: overrides).restricted(to: targets)
    }
}

/// Prints a user-facing error to stderr and exits non-zero, without ArgumentParser's usage text.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    return ExitCode.failure
}

func printLine(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

Qatflow.main()
