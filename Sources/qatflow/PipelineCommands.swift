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

    @Option(help: "local (this machine, --jobs at once) or slurm (each stage instance not cached becomes an sbatch job; the project and --cache-dir must be on a filesystem the nodes share).")
    var executor = "local"
    @Option(help: "Slurm partition for every job.") var partition: String?
    @Option(help: "Slurm account for every job.") var account: String?
    @Option(name: .customLong("slurm-arg"), parsing: .unconditionalSingleValue, help: ArgumentHelp("An extra sbatch argument for every job, e.g. --slurm-arg=--qos=short. Repeatable.", valueName: "ARG"))
    var slurmArguments: [String] = []

    func run() throws {
        do {
            let plan = try options.makePlan()
            for name in forced where plan.instances.allSatisfy({ $0.stageID != name && $0.name != name }) {
                throw ValidationError("--force \(name): no such stage in \(options.manifest)")
            }
            let runOptions = RunOptions(jobs: jobs, forced: Set(forced), quiet: quiet, overrides: options.overrides)
            guard executor == "slurm" || (partition == nil && account == nil && slurmArguments.isEmpty) else {
                throw ValidationError("--partition, --account and --slurm-arg apply to --executor slurm")
            }
            let record: RunRecord
            switch executor {
            case "local":
                record = try Runner(plan: plan, store: options.store, options: runOptions, print: { printLine($0) }).run()
            case "slurm":
                let slurm = SlurmOptions(partition: partition, account: account, extraArguments: slurmArguments, qatflow: currentExecutablePath())
                record = try SlurmExecutor(plan: plan, manifest: URL(fileURLWithPath: options.manifest), store: options.store,
                                           options: runOptions, slurm: slurm, print: { printLine($0) }).run()
            default:
                throw ValidationError("--executor \(executor): expected local or slurm")
            }
            printLine("run \(record.id): \(record.summary) in \(String(format: "%.2f", record.seconds)) s")
            printLine("report: \(displayPath(RunHistory(store: options.store).directory(ofRun: record.id).appendingPathComponent(RunReport.fileName)))")
        } catch let error as ValidationError {
            throw error
        } catch let failure as RunFailure {
            let report = RunHistory(store: options.store).directory(ofRun: failure.record.id).appendingPathComponent(RunReport.fileName)
            throw fail(StageFailure("\(failure)\nreport: \(displayPath(report))"))
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
    static let configuration = CommandConfiguration(commandName: "status", abstract: "List recent runs, or the Slurm jobs of one run and their states.")

    @Argument(help: "A run id (or a unique prefix) submitted with --executor slurm: its jobs, from squeue/scontrol.") var runID: String?
    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?
    @Option(name: .shortAndLong, help: "How many runs.") var limit = 10

    func run() throws {
        let store = storeFor(project: project, cacheDirectory: cacheDirectory)
        if let runID {
            do {
                let jobs = try SlurmRunSelection.jobs(of: runID, store: store)
                let states = try SlurmExecutor.states(of: jobs.jobs.map(\.id))
                printLine("run \(jobs.run) (\(jobs.manifest)): \(jobs.jobs.count) Slurm jobs")
                for job in jobs.jobs {
                    let state = states[job.id].map { $0.state + ($0.reason.isEmpty || $0.reason == "None" ? "" : " (\($0.reason))") } ?? "?"
                    printLine("  \(job.id)  \(job.instance.padding(toLength: 28, withPad: " ", startingAt: 0)) \(state)  log: \(job.log)")
                }
            } catch {
                throw fail(error)
            }
            return
        }
        let runs = RunHistory(store: store).recentRuns(limit: limit)
        if runs.isEmpty { printLine("no runs recorded in \(store.root.path)"); return }
        for line in RunHistory.statusLines(runs) { printLine(line) }
    }
}

struct ShowCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "show", abstract: "Tables across runs: one row per evaluated model (float/PTQ/QAT, bits, top-1, file size), then one row per stage instance with the parameters that differ and its metrics (like `dvc exp show`).")

    @Argument(help: "A run id (or a unique prefix), `last`, or a manifest (its runs); default: the most recent runs.") var runID: String?
    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?
    @Option(name: .shortAndLong, help: "How many recent runs, when no single run is named.") var limit = 5
    @Option(help: "Only the stage table, only stages of this kind (e.g. evaluate), with every metric.") var kind: String?
    @Flag(name: .customLong("models-only"), help: "Only the table of evaluated models (what `make run` prints at the end).") var modelsOnly = false

    func run() throws {
        let history = RunHistory(store: storeFor(project: project, cacheDirectory: cacheDirectory))
        do {
            let runs = try RunSelection.runs(runID, history: history, project: project, limit: limit)
            if runs.isEmpty { printLine(runID.map { "no runs of \($0) recorded" } ?? "no runs recorded"); return }
            guard kind == nil, let models = RunResults.table(runs) else {
                printLine(RunHistory.table(runs, kind: kind))
                return
            }
            printLine("models (one row per model an evaluate stage ran; top-1 of quantized models on the int8 engine):")
            printLine(models)
            if modelsOnly { return }
            printLine("")
            printLine("stages:")
            printLine(RunHistory.table(runs, perModelMetrics: false))
        } catch {
            throw fail(error)
        }
    }
}

struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "report", abstract: "Print the path of a run's report.md (written next to run.json with its SVG plots); opens nothing.")

    @Argument(help: "A run id (or a unique prefix), `last`, or a manifest (its newest run). Default: the newest run.") var runID: String?
    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?

    func run() throws {
        let history = RunHistory(store: storeFor(project: project, cacheDirectory: cacheDirectory))
        do {
            guard let newest = try RunSelection.runs(runID, history: history, project: project, limit: 1).first else {
                throw StageFailure(runID.map { "no runs of \($0) recorded in \(history.store.runsDirectory.path)" }
                                   ?? "no runs recorded in \(history.store.runsDirectory.path)")
            }
            printLine(displayPath(try history.report(of: newest)))
        } catch {
            throw fail(error)
        }
    }
}

/// The RUN argument of `show` and `report`.
enum RunSelection {
    /// nil: the `limit` newest runs; `last`: the newest; a manifest file (`.yaml`/`.yml`, or an existing file):
    /// its `limit` newest runs; otherwise a run id or unique prefix.
    static func runs(_ argument: String?, history: RunHistory, project: String?, limit: Int) throws -> [RunRecord] {
        guard let argument else { return history.recentRuns(limit: limit) }
        if argument == "last" { return history.recentRuns(limit: 1) }
        var isDirectory: ObjCBool = false
        let isFile = FileManager.default.fileExists(atPath: argument, isDirectory: &isDirectory) && !isDirectory.boolValue
        guard isFile || argument.hasSuffix(".yaml") || argument.hasSuffix(".yml") else { return [try history.run(matching: argument)] }
        // Run records keep the manifest path as it was given, relative to where `qatflow run` ran (the project).
        let projectURL = URL(fileURLWithPath: project ?? FileManager.default.currentDirectoryPath).standardizedFileURL
        let wanted = URL(fileURLWithPath: argument).standardizedFileURL.path
        return Array(history.recentRuns(limit: Int.max).filter {
            URL(fileURLWithPath: $0.manifest, relativeTo: projectURL).standardizedFileURL.path == wanted
        }.prefix(limit))
    }
}

/// Relative to the current directory when inside it, else absolute.
func displayPath(_ url: URL) -> String {
    let current = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).standardizedFileURL.path
    let path = url.standardizedFileURL.path
    return path.hasPrefix(current + "/") ? String(path.dropFirst(current.count + 1)) : path
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
            let resources = kind.resources
            printLine("    (version \(kind.version); default resources: \(resources.cpus) CPU\(resources.cpus == 1 ? "" : "s"), \(resources.memoryMB / 1024) GB, \(resources.minutes) min)")
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

struct CancelCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "cancel", abstract: "Cancel the Slurm jobs of a run submitted with --executor slurm (scancel). Stages that finished stay in the cache; re-running resumes from it.")

    @Argument(help: "A run id (or a unique prefix).") var runID: String
    @Option(help: "Project directory. Default: the current directory.") var project: String?
    @Option(name: .customLong("cache-dir"), help: "Default: PROJECT/.qatflow") var cacheDirectory: String?

    func run() throws {
        do {
            let jobs = try SlurmRunSelection.jobs(of: runID, store: storeFor(project: project, cacheDirectory: cacheDirectory))
            let ids = try SlurmExecutor.cancel(jobs)
            printLine("run \(jobs.run): cancelled \(ids.count) Slurm job\(ids.count == 1 ? "" : "s") (\(ids.joined(separator: ", ")))")
        } catch {
            throw fail(error)
        }
    }
}

struct RunStageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run-stage", abstract: "Run one stage instance described by a job file (what a Slurm job of `qatflow run --executor slurm` runs).", shouldDisplay: false)

    @Argument(help: "The job file (JSON) the submitting run wrote.") var job: String

    func run() throws {
        do {
            let record = try StageJob.read(URL(fileURLWithPath: job)).run(registry: .production, print: { printLine($0) })
            printLine(Runner.describe(record, index: 1, total: 1))
            if record.outcome == .failed { throw ExitCode.failure }
        } catch let exit as ExitCode {
            throw exit
        } catch {
            throw fail(error)
        }
    }
}

/// The Slurm jobs of the run `argument` names (an id or unique prefix), from its `slurm.json`.
enum SlurmRunSelection {
    static func jobs(of argument: String, store: ArtifactStore) throws -> SlurmRunJobs {
        let runs = ((try? FileManager.default.contentsOfDirectory(atPath: store.runsDirectory.path)) ?? []).filter { $0.hasPrefix(argument) }.sorted()
        guard !runs.isEmpty else { throw StageFailure("no run \(argument) in \(store.runsDirectory.path)") }
        guard runs.count == 1 else { throw StageFailure("run id \(argument) is ambiguous: \(runs.joined(separator: ", "))") }
        let file = SlurmRunJobs.fileURL(runDirectory: store.runsDirectory.appendingPathComponent(runs[0]))
        guard let data = FileManager.default.contents(atPath: file.path) else {
            throw StageFailure("run \(runs[0]) was not run with --executor slurm (no \(file.path))")
        }
        return try JSONDecoder().decode(SlurmRunJobs.self, from: data)
    }
}

/// The running qatflow binary's absolute path (what Slurm jobs run).
func currentExecutablePath() -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
}
