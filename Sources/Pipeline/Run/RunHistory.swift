import Foundation

/// Reads run records back for `qatflow status` and `qatflow show`.
public struct RunHistory {
    public let store: ArtifactStore

    public init(store: ArtifactStore) { self.store = store }

    /// Most recent first (run ids start with a UTC timestamp, so names sort by time).
    public func recentRuns(limit: Int) -> [RunRecord] {
        let ids = ((try? FileManager.default.contentsOfDirectory(atPath: store.runsDirectory.path)) ?? []).sorted(by: >)
        return ids.lazy.compactMap(load).prefix(limit).map { $0 }
    }

    public func run(matching prefix: String) throws -> RunRecord {
        let ids = ((try? FileManager.default.contentsOfDirectory(atPath: store.runsDirectory.path)) ?? []).filter { $0.hasPrefix(prefix) }
        guard ids.count == 1, let record = load(ids[0]) else {
            throw StageFailure(ids.isEmpty ? "no run '\(prefix)' in \(store.runsDirectory.path)" : "'\(prefix)' matches \(ids.count) runs: \(ids.sorted().joined(separator: ", "))")
        }
        return record
    }

    /// `.qatflow/runs/<id>/`: run.json, report.md and the report's plots.
    public func directory(ofRun id: String) -> URL {
        store.runsDirectory.appendingPathComponent(id)
    }

    /// The run's report.md, written now from run.json if the run has none yet (a run from before reports).
    public func report(of run: RunRecord) throws -> URL {
        let url = directory(ofRun: run.id).appendingPathComponent(RunReport.fileName)
        if !FileManager.default.fileExists(atPath: url.path) { try RunReport(run: run).write(to: directory(ofRun: run.id)) }
        return url
    }

    private func load(_ id: String) -> RunRecord? {
        let url = store.runsDirectory.appendingPathComponent(id).appendingPathComponent("run.json")
        return FileManager.default.contents(atPath: url.path).flatMap { try? JSONDecoder().decode(RunRecord.self, from: $0) }
    }

    public static func statusLines(_ runs: [RunRecord]) -> [String] {
        let rows = runs.map { run in
            [run.id, run.started, run.name, run.manifest, run.succeeded ? "ok" : "FAILED", run.summary, String(format: "%.2f s", run.seconds)]
        }
        return TextTable.render(header: ["run", "started", "name", "manifest", "result", "stages", "time"], rows: rows)
    }

    /// One row per stage instance of the given runs. Parameter columns are those whose value differs between
    /// rows of the same manifest stage (the ones a comparison is about: a swept or edited parameter, not one that
    /// only another kind has); metric columns are every scalar metric, without per-model ones
    /// (`top1/<instance>`, which `RunResults.table` shows as rows) when `perModelMetrics` is false.
    public static func table(_ runs: [RunRecord], kind: String? = nil, perModelMetrics: Bool = true) -> String {
        let stages = runs.flatMap { run in run.stages.map { (run, $0) } }.filter { kind == nil || $0.1.kind == kind }
        let parameterNames = Set(stages.flatMap { $0.1.parameters.keys }).sorted().filter { name in
            Dictionary(grouping: stages, by: { $0.1.stage }).values.contains { group in
                Set(group.map { $0.1.parameters[name].flatMap(MetricsFormatter.scalar) ?? "" }).count > 1
            }
        }
        var metricNameSet = Set<String>()
        for (run, stage) in stages {
            for (name, value) in stage.metrics where MetricsFormatter.scalar(value) != nil {
                if perModelMetrics || !RunResults.isPerModelMetric(name, in: run) { metricNameSet.insert(name) }
            }
        }
        let metricNames = metricNameSet.sorted()
        let header = ["run", "stage", "kind", "outcome"] + parameterNames + metricNames
        let rows = stages.map { run, stage in
            [run.id, stage.instance, stage.kind, stage.outcome.rawValue]
                + parameterNames.map { stage.parameters[$0].flatMap(MetricsFormatter.scalar) ?? "-" }
                + metricNames.map { stage.metrics[$0].flatMap(MetricsFormatter.scalar) ?? "-" }
        }
        return TextTable.render(header: header, rows: rows).joined(separator: "\n")
    }
}

/// Plain aligned text tables (numbers right-aligned).
public enum TextTable {
    public static func render(header: [String], rows: [[String]]) -> [String] {
        let widths = header.indices.map { column in
            ([header[column]] + rows.map { column < $0.count ? $0[column] : "" }).map(\.count).max() ?? 0
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { column, cell in
                let isNumber = Double(cell.replacingOccurrences(of: "%", with: "")) != nil
                return isNumber ? cell.leftPadded(to: widths[column]) : cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }
        return [line(header), widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ")] + rows.map(line)
    }
}

public enum ByteCount {
    public static func format(_ bytes: Int) -> String {
        let units = ["B", "KB", "MB", "GB"]
        var value = Double(bytes), unit = 0
        while value >= 1000 && unit < units.count - 1 { value /= 1000; unit += 1 }
        return unit == 0 ? "\(bytes) B" : String(format: "%.1f %@", value, units[unit])
    }
}
