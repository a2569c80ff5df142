import ArgumentParser
import Foundation
import Pipeline

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run a pipeline manifest; cached stages are restored, not re-run.")

    @OptionGroup var options: ManifestOptions

    @Option(name: .shortAndLong, help: "Stages run in parallel at most.")
    var jobs: Int = 1

    @Option(name: .customLong("force"), help: "Run this stage (id or instance name) even if cached. Repeatable.")
    var forced: [String] = []

    @Flag(help: "No progress or per-stage lines; errors and the final line only.")
    var quiet = false

    func run() throws {
        do {
            let plan = try options.makePlan()
            for name in forced where plan.instances.allSatisfy({ $0.stageID != name && $0.name != name }) {
                throw ValidationError("--force \(name): no such stage in \(options.manifest)")
            }
            let runner = Runner(plan: plan, store: options.store,
                                options: RunOptions(jobs: jobs, forced: Set(forced), quiet: quiet, overrides: options.overrides),
                                print: { printLine($0) })
            let record = try runner.run()
            printLine("run \(record.id): \(record.summary) in \(String(format: "%.2f", record.seconds)) s")
        } catch let error as ValidationError {
            throw error
        } catch {
            throw fail(error)
        }
    }
}

struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "plan", abstract: "Show the expanded stages in order, their keys, and whether each is cached or will run. Does no work.")

    @OptionGroup var options: ManifestOptions

    func run() throws {
        do {
            let plan = try options.makePlan()
            for line in try PlanPreview(plan: plan, store: options.store).lines() { printLine(line) }
        } catch {
            throw fail(error)
        }
    }
}

struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "status", abstract: "List recent runs.")

    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?
    @Option(name: .shortAndLong, help: "How many runs.") var limit = 10

    func run() throws {
        let store = storeFor(project: project, cacheDirectory: cacheDirectory)
        let runs = RunHistory(store: store).recentRuns(limit: limit)
        if runs.isEmpty { printLine("no runs recorded in \(store.root.path)"); return }
        for line in RunHistory.statusLines(runs) { printLine(line) }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "A table across runs: one row per stage instance, its parameters and metrics (like `dvc exp show`).")

    @Argument(help: "A run id (or a unique prefix); default: the most recent runs.") var runID: String?
    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?
    @Option(name: .shortAndLong, help: "How many recent runs, when no run is named.") var limit = 5
    @Option(help: "Only stages of this kind (e.g. evaluate).") var kind: String?

    func run() throws {
        let history = RunHistory(store: storeFor(project: project, cacheDirectory: cacheDirectory))
        do {
            let runs = try runID.map { [try history.run(matching: $0)] } ?? history.recentRuns(limit: limit)
            if runs.isEmpty { printLine("no runs recorded"); return }
            printLine(RunHistory.table(runs, kind: kind))
        } catch {
            throw fail(error)
        }
    }
}

struct GCCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "gc", abstract: "Remove cache objects that no stage record references.")

    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?
    @Flag(name: .customLong("dry-run"), help: "Only say what would be removed.") var dryRun = false

    func run() throws {
        do {
            let result = try GarbageCollector(store: storeFor(project: project, cacheDirectory: cacheDirectory)).collect(dryRun: dryRun)
            printLine("\(dryRun ? "would remove" : "removed") \(result.removedObjects) objects (\(ByteCount.format(result.removedBytes))); kept \(result.keptObjects) (\(ByteCount.format(result.keptBytes)))")
        } catch {
            throw fail(error)
        }
    }
}

struct StagesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "stages", abstract: "List the stage kinds a manifest can use, with their parameters and defaults.")

    func run() throws {
        for kind in StageRegistry.production.all {
            printLine("\(kind.name): \(kind.summary)")
            for parameter in kind.parameters {
                let defaultText = parameter.defaultValue.map { "default \($0.canonical)" } ?? "required"
                printLine("    \(parameter.name) (\(parameter.type.displayName), \(defaultText)): \(parameter.help)")
            }
        }
    }
}

func storeFor(project: String?, cacheDirectory: String?) -> ArtifactStore {
    let projectURL = URL(fileURLWithPath: project ?? FileManager.default.currentDirectoryPath).standardizedFileURL
    return ArtifactStore(root: cacheDirectory.map { URL(fileURLWithPath: $0).standardizedFileURL } ?? projectURL.appendingPathComponent(".qatflow"))
}
