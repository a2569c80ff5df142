import Foundation

/// `report.md` and its SVG plots, written into a run's folder (`.qatflow/runs/<id>/`, next to `run.json`) from
/// the run record alone, so `qatflow report` can also write them for a run recorded before reports existed.
///
/// - report.md: the run's stages (status, seconds, key, short metrics), what failed, one results row per
///   evaluated model (float/PTQ/QAT, bits, top-1 on the int8 engine, top-1 of the simulation, agreement, top-5,
///   file size and its share of the float model), and the plots.
/// - accuracy-vs-bits.svg: top-1 against bits (W = A) per method, the float model as a dashed line; models
///   with W ≠ A as separate markers at their weight bits.
/// - size-vs-accuracy.svg: top-1 against file size, one labelled marker per model.
/// - latency.svg: int8 vs float engine latency per model, only when a stage measured it
///   (`latency_ms/<model>`, `latency_ms_int8/<model>`, `latency_ms_float/<model>`).
public struct RunReport: Sendable {
    public static let fileName = "report.md"
    public static let accuracyVsBitsFile = "accuracy-vs-bits.svg"
    public static let sizeVsAccuracyFile = "size-vs-accuracy.svg"
    public static let latencyFile = "latency.svg"

    public let run: RunRecord
    public let models: [ModelResult]
    public let latencies: [ModelLatency]

    public init(run: RunRecord) {
        self.run = run
        models = RunResults.models(in: run)
        latencies = RunResults.latencies(in: run)
    }

    /// Writes the plots, then report.md (so a report on disk always has its plots), each atomically.
    /// Returns the files written, report.md first.
    @discardableResult
    public func write(to directory: URL) throws -> [URL] {
        var written: [URL] = []
        for plot in plots() {
            let url = directory.appendingPathComponent(plot.fileName)
            try ArtifactStore.writeAtomically(Data(plot.svg.utf8), to: url)
            written.append(url)
        }
        let report = directory.appendingPathComponent(Self.fileName)
        try ArtifactStore.writeAtomically(Data(markdown().utf8), to: report)
        return [report] + written
    }

    // MARK: - Plots

    /// The plots this run has data for, as (file name, SVG text).
    public func plots() -> [(fileName: String, svg: String)] {
        var plots: [(fileName: String, svg: String)] = []
        if let plot = accuracyVsBits() { plots.append((fileName: Self.accuracyVsBitsFile, svg: plot.render())) }
        if let plot = sizeVsAccuracy() { plots.append((fileName: Self.sizeVsAccuracyFile, svg: plot.render())) }
        if let chart = latencyChart() { plots.append((fileName: Self.latencyFile, svg: chart.render())) }
        return plots
    }

    /// Rows a plot shows once: the same model evaluated twice on the same dataset is one point.
    private var distinctModels: [ModelResult] {
        var seen = Set<String>()
        return models.filter { seen.insert("\($0.model)|\($0.dataset ?? "")|\($0.images ?? 0)").inserted }
    }

    func accuracyVsBits() -> SVGPlot? {
        let quantized = distinctModels.filter { $0.method.isQuantized && $0.weightBits != nil && $0.activationBits != nil }
        guard !quantized.isEmpty else { return nil }
        var series: [SVGPlot.Series] = []
        // A method's first series has the method's style (as in the size plot); further ones take unused styles.
        var nextStyle = ModelMethod.allCases.count
        for method in ModelMethod.allCases where method.isQuantized {
            let rows = quantized.filter { $0.method == method }
            let uniform = rows.filter { $0.weightBits == $0.activationBits }
            for (index, (name, group)) in Self.grouped(uniform, method: method).enumerated() {
                let style = index == 0 ? Self.style(method) : nextStyle
                if index > 0 { nextStyle += 1 }
                series.append(SVGPlot.Series(name: name, points: group.map { SVGPlot.Point(x: Double($0.weightBits!), y: $0.top1) }, style: style))
            }
            let mixed = rows.filter { $0.weightBits != $0.activationBits }
            if !mixed.isEmpty {
                series.append(SVGPlot.Series(name: "\(method.rawValue), W ≠ A (at W bits)",
                                             points: mixed.map { SVGPlot.Point(x: Double($0.weightBits!), y: $0.top1, label: $0.bitsLabel) },
                                             connected: false, style: uniform.isEmpty ? Self.style(method) : nextStyle))
                if !uniform.isEmpty { nextStyle += 1 }
            }
        }
        let floats = distinctModels.filter { $0.method == .float }
        var seen = Set<String>()
        let distinctFloats = floats.filter { seen.insert("\($0.model)|\($0.top1)").inserted }
        let lines = distinctFloats.map { row in
            SVGPlot.ReferenceLine(y: row.top1, name: distinctFloats.count == 1 ? "float" : "float \(row.model)")
        }
        return SVGPlot(title: "Top-1 accuracy vs bits (W = A)", xLabel: "bits of weights and activations",
                       yLabel: "top-1 accuracy (%)", series: series, referenceLines: lines, integerX: true)
    }

    func sizeVsAccuracy() -> SVGPlot? {
        let sized = distinctModels.filter { $0.fileBytes != nil }
        guard !sized.isEmpty else { return nil }
        let series = ModelMethod.allCases.compactMap { method -> SVGPlot.Series? in
            let rows = sized.filter { $0.method == method }
            guard !rows.isEmpty else { return nil }
            return SVGPlot.Series(name: method.rawValue, points: rows.map {
                SVGPlot.Point(x: Double($0.fileBytes!) / 1000, y: $0.top1, label: $0.model)
            }, connected: false, style: Self.style(method))
        }
        return SVGPlot(title: "Top-1 accuracy vs model file size", xLabel: "model file size (KB)",
                       yLabel: "top-1 accuracy (%)", series: series)
    }

    func latencyChart() -> SVGBarChart? {
        guard !latencies.isEmpty else { return nil }
        return SVGBarChart(title: "Latency: int8 engine vs float engine", yLabel: "latency (ms)",
                           categories: latencies.map(\.model),
                           series: [SVGBarChart.Series(name: "int8 engine", values: latencies.map(\.int8Milliseconds)),
                                    SVGBarChart.Series(name: "float engine", values: latencies.map(\.floatMilliseconds))])
    }

    /// Palette index of a method: float blue circles, PTQ orange squares, QAT green triangles, other red diamonds.
    static func style(_ method: ModelMethod) -> Int { ModelMethod.allCases.firstIndex(of: method)! }

    /// One series per method, split further by the parameters (other than bits) that differ between its
    /// models — a `bits × lr` sweep gives one QAT line per learning rate — and by dataset when several were used.
    static func grouped(_ rows: [ModelResult], method: ModelMethod) -> [(String, [ModelResult])] {
        let bitNames: Set<String> = ["bits", "weight_bits", "activation_bits"]
        let names = Set(rows.flatMap(\.parameters.keys)).subtracting(bitNames).sorted().filter { name in
            Set(rows.map { $0.parameters[name]?.canonical ?? "" }).count > 1
        }
        let datasets = Set(rows.map { "\($0.dataset ?? "")|\($0.images ?? 0)" }).count > 1
        var order: [String] = []
        var groups: [String: [ModelResult]] = [:]
        for row in rows {
            var parts = names.map { "\($0)=\(row.parameters[$0]?.description ?? "-")" }
            if datasets { parts.append("on \(row.dataset ?? "?")") }
            let name = method.rawValue + (parts.isEmpty ? "" : " " + parts.joined(separator: ", "))
            if groups[name] == nil { order.append(name) }
            groups[name, default: []].append(row)
        }
        return order.map { ($0, groups[$0]!) }
    }

    // MARK: - Markdown

    public func markdown() -> String {
        var lines: [String] = []
        lines.append("# Run \(run.id): \(run.name)")
        lines.append("")
        lines.append("- manifest: `\(run.manifest)`")
        let executor = run.executor == "slurm" ? "Slurm jobs (the submitting machine below; each stage's own machine in run.json)" : "-j \(run.jobs)"
        lines.append("- started: \(run.started), \(String(format: "%.2f", run.seconds)) s, \(executor), qatflow \(run.engineVersion)")
        if let machine = run.machine { lines.append("- machine: \(machine)") }
        // A cached stage's numbers may come from another CPU (the key does not include it): say which.
        for stage in run.stages {
            if let machine = stage.machine, let current = run.machine, machine != current {
                lines.append("- \(Self.code(stage.instance)) (\(stage.outcome.rawValue)) was computed on another machine: \(machine)")
            }
        }
        if !run.overrides.isEmpty { lines.append("- overrides: " + run.overrides.map { "`--set \($0)`" }.joined(separator: " ")) }
        lines.append("- result: **\(run.succeeded ? "ok" : "FAILED")**: \(run.summary)")
        lines.append("")
        lines += stageSection()
        lines += resultSection()
        lines += plotSection()
        return lines.joined(separator: "\n") + "\n"
    }

    private func stageSection() -> [String] {
        var lines = ["## Stages", ""]
        lines.append("| # | stage | kind | status | seconds | key | metrics |")
        lines.append("|--:|---|---|---|--:|---|---|")
        for (index, stage) in run.stages.enumerated() {
            // Per-model metrics (top1/<model>, ...) are in the results table; the rest are short scalars.
            let metrics = stage.metrics.filter { !RunResults.isPerModelMetric($0.key, in: run) }
            lines.append(Self.row([
                "\(index + 1)", Self.code(stage.instance), stage.kind,
                stage.outcome == .failed || stage.outcome == .skipped ? "**\(stage.outcome.rawValue)**" : stage.outcome.rawValue,
                String(format: "%.2f", stage.seconds), stage.key.map { Self.code(String($0.prefix(12))) } ?? "–",
                MetricsFormatter.inline(metrics),
            ]))
        }
        let problems = run.stages.filter { $0.error != nil }
        if !problems.isEmpty {
            lines += ["", "### What failed", ""]
            for stage in problems {
                lines.append("- \(Self.code(stage.instance)) \(stage.outcome.rawValue):")
                lines.append("")
                lines.append("  ```")
                lines += stage.error!.split(separator: "\n", omittingEmptySubsequences: false).map { "  " + $0 }
                lines.append("  ```")
            }
        }
        lines.append("")
        return lines
    }

    private func resultSection() -> [String] {
        var lines = ["## Results", ""]
        guard !models.isEmpty else {
            let reason = run.stages.contains { $0.kind == "evaluate" }
                ? "no `evaluate` stage finished" : "the pipeline has no `evaluate` stage"
            return lines + ["No model was evaluated in this run (\(reason)), so there is no results table.", ""]
        }
        let evaluations = Set(models.map(\.evaluation))
        if evaluations.count == 1, let first = models.first {
            lines.append("Evaluated by \(Self.code(first.evaluation)) on \(Self.describeData(first)).")
        }
        lines.append("Quantized models run on the int8 engine (top-1); *simulated* is the same QDQ model run by the float "
                     + "engine (fake quant), *agreement* the share of images where both predict the same class. "
                     + "File sizes are the stored model files; % of float is against the float model's file.")
        lines.append("")
        var header = ["model", "kind", "weight bits", "activation bits", "top-1 %", "top-1 % simulated", "agreement %", "top-5 %", "file bytes", "% of float"]
        if evaluations.count > 1 { header.append("evaluated by") }
        lines.append(Self.row(header))
        lines.append("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|" + (evaluations.count > 1 ? "---|" : ""))
        for model in models {
            let bits = { (value: Int?) in model.method.isQuantized ? value.map { String($0) } ?? "?" : "32" }
            var cells = [Self.code(model.model), model.method.rawValue, bits(model.weightBits), bits(model.activationBits),
                         Self.percent(model.top1), Self.percent(model.top1Simulated), Self.percent(model.agreement),
                         Self.percent(model.top5), model.fileBytes.map(Self.thousands) ?? "–",
                         model.sizePercentOfFloat.map { String(format: "%.1f", $0) } ?? "–"]
            if evaluations.count > 1 { cells.append("\(Self.code(model.evaluation)) on \(Self.describeData(model))") }
            lines.append(Self.row(cells))
        }
        let unknownBits = models.filter { $0.method == .quantized }
        if !unknownBits.isEmpty {
            lines += ["", "Bits of " + unknownBits.map { Self.code($0.model) }.joined(separator: ", ")
                      + " are not known from the run record (not made by a `quantize` or `qat` stage); they are left out of the accuracy-vs-bits plot."]
        }
        lines.append("")
        return lines
    }

    private func plotSection() -> [String] {
        var lines = ["## Plots", ""]
        let written = Set(plots().map(\.fileName))
        if written.contains(Self.accuracyVsBitsFile) {
            lines += ["![accuracy vs bits](\(Self.accuracyVsBitsFile))", ""]
        } else {
            lines += ["No quantized model with known bits was evaluated in this run, so there is no accuracy-vs-bits plot.", ""]
        }
        if written.contains(Self.sizeVsAccuracyFile) {
            lines += ["![model size vs accuracy](\(Self.sizeVsAccuracyFile))", ""]
        } else {
            lines += ["No evaluated model has a known file size, so there is no size-vs-accuracy plot.", ""]
        }
        if written.contains(Self.latencyFile) {
            lines += ["![int8 vs float latency](\(Self.latencyFile))", ""]
            lines.append(Self.row(["model", "int8 engine ms", "float engine ms"]))
            lines.append("|---|--:|--:|")
            for latency in latencies {
                lines.append(Self.row([Self.code(latency.model), latency.int8Milliseconds.map { String(format: "%.3f", $0) } ?? "–",
                                       latency.floatMilliseconds.map { String(format: "%.3f", $0) } ?? "–"]))
            }
            lines.append("")
        } else {
            lines += ["No latency was measured in this run (no stage reported `latency_ms/<model>` metrics: `evaluate` does unless "
                      + "`latency_repeats: 0`; `qatflow bench MODEL --engine int8|float` does outside pipelines), so there is no latency plot.", ""]
        }
        return lines
    }

    // MARK: - Formatting

    static func row(_ cells: [String]) -> String {
        "| " + cells.map { $0.replacingOccurrences(of: "|", with: "\\|") }.joined(separator: " | ") + " |"
    }

    static func code(_ text: String) -> String { "`\(text)`" }

    static func percent(_ value: Double?) -> String { value.map { String(format: "%.2f", $0) } ?? "–" }

    /// 777315 → "777,315".
    static func thousands(_ value: Int) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return (value < 0 ? "-" : "") + out
    }

    static func describeData(_ model: ModelResult) -> String {
        let images = model.images.map { " (\(thousands($0)) images)" } ?? ""
        return (model.dataset.map(code) ?? "its dataset") + images
    }
}
