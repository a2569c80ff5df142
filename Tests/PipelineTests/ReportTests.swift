import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
import Pipeline

/// Every run writes report.md and SVG plots next to run.json; `qatflow report` prints where; `qatflow show` lists
/// one row per evaluated model. Most tests use cheap stand-in kinds named like the real ones (the report reads
/// kinds, parameters and metrics from the run record, not from the engines); one runs the real binary.
final class ReportTests: XCTestCase {
    /// Stand-ins: a "model" file holds its top-1 as text; `evaluate` reads it back as the real one reports it.
    static func registry() -> StageRegistry {
        let bitParameters = [
            ParameterSpec("bits", .int, default: .int(8), help: ""),
            ParameterSpec("weight_bits", .int, default: .null, help: ""),
            ParameterSpec("activation_bits", .int, default: .null, help: ""),
            ParameterSpec("lr", .double, default: .double(1e-4), help: ""),
        ]
        @Sendable func model(accuracy: Double, bytes: Int, quantized: Bool, in context: StageContext) throws -> StageResult {
            let text = "\(quantized ? "q" : "f") \(accuracy)"
            let padded = text + String(repeating: " ", count: max(0, bytes - text.utf8.count))
            try padded.write(to: context.outputDirectory.appendingPathComponent("model.bin"), atomically: true, encoding: .utf8)
            return StageResult(artifacts: ["model": "model.bin"], metrics: ["file_bytes": .int(bytes)])
        }
        @Sendable func bits(_ context: StageContext) throws -> (Int, Int) {
            let bits = try context.int("bits")
            return (context.optionalInt("weight_bits") ?? bits, context.optionalInt("activation_bits") ?? bits)
        }
        @Sendable func readModel(_ url: URL) throws -> (quantized: Bool, top1: Double) {
            let parts = try String(contentsOf: url, encoding: .utf8).split(separator: " ")
            return (parts[0] == "q", Double(parts[1])!)
        }
        return StageRegistry([
            StageKind(name: "convert", summary: "a float model", parameters: [ParameterSpec("top1", .double, default: .double(91.5), help: "")], inputs: .none) { context in
                try model(accuracy: try context.double("top1"), bytes: 4000, quantized: false, in: context)
            },
            StageKind(name: "quantize", summary: "PTQ", parameters: bitParameters, inputs: .any) { context in
                let (weight, activation) = try bits(context)
                return try model(accuracy: 91.5 - Double(8 - min(weight, activation)) * 3, bytes: 500 * weight, quantized: true, in: context)
            },
            StageKind(name: "qat", summary: "QAT", parameters: bitParameters, inputs: .any) { context in
                let (weight, activation) = try bits(context)
                let lrBonus = try context.double("lr") > 5e-4 ? 0.5 : 0
                return try model(accuracy: 91.5 - Double(8 - min(weight, activation)) + lrBonus, bytes: 500 * weight + 12, quantized: true, in: context)
            },
            StageKind(name: "evaluate", summary: "reads the accuracies back", parameters: [ParameterSpec("dataset", .string, default: .string("test"), help: "")], inputs: .models) { context in
                var metrics: [String: JSONValue] = ["images": .int(1000)]
                for (stage, url) in context.inputModels() {
                    let (quantized, top1) = try readModel(url)
                    metrics["top1/\(stage)"] = .double(top1)
                    metrics["top5/\(stage)"] = .double(99.5)
                    metrics["per_class/\(stage)"] = .array([.double(top1)])
                    if quantized {
                        metrics["top1_simulated/\(stage)"] = .double(top1 - 0.1)
                        metrics["agreement/\(stage)"] = .double(99.9)
                    }
                }
                return StageResult(metrics: metrics)
            },
            StageKind(name: "latency", summary: "pretends to time each upstream model", parameters: [], inputs: .models) { context in
                var metrics: [String: JSONValue] = [:]
                for (index, (stage, _)) in context.inputModels().enumerated() {
                    metrics["latency_ms/\(stage)"] = .double(1.5 + Double(index))
                    if index > 0 { metrics["latency_ms_float/\(stage)"] = .double(4.0 + Double(index)) }
                }
                return StageResult(metrics: metrics)
            },
            StageKind(name: "fail", summary: "always fails", parameters: [], inputs: .any) { context in
                throw StageFailure("deliberate failure in \(context.stageID)")
            },
        ])
    }

    static let sweep = """
        matrix:
          bits: [8, 4, 2]
          lr: [0.0001, 0.001]
        stages:
          convert: {uses: convert}
          ptq: {uses: quantize, needs: convert, with: {bits: "${matrix.bits}"}}
          ptq-w4a8: {uses: quantize, needs: convert, with: {weight_bits: 4, activation_bits: 8}}
          qat: {uses: qat, needs: convert, with: {bits: "${matrix.bits}", lr: "${matrix.lr}"}}
          evaluate: {uses: evaluate, needs: [convert, ptq, qat]}
          evaluate-w4a8: {uses: evaluate, needs: [ptq-w4a8]}
        """

    func runDirectory(_ project: TemporaryProject, _ record: RunRecord) -> URL {
        RunHistory(store: project.store).directory(ofRun: record.id)
    }

    func testRunWritesReportWithResultsAndWellFormedPlots() throws {
        let project = try TemporaryProject()
        let record = try project.run(Self.sweep, registry: Self.registry())
        let folder = runDirectory(project, record)
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
        XCTAssertEqual(files, ["accuracy-vs-bits.svg", "report.md", "run.json", "size-vs-accuracy.svg"], "no temporary files left, no latency plot without latency")

        let report = try String(contentsOf: folder.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("# Run \(record.id): pipeline"), report)
        XCTAssertTrue(report.contains("**ok**"), report)
        // Stages: status, seconds, key.
        let convertKey = try XCTUnwrap(record.stages.first?.key)
        XCTAssertTrue(report.contains("| 1 | `convert` | convert | ran |"), report)
        XCTAssertTrue(report.contains("`\(convertKey.prefix(12))`"), report)
        // Results: one row per evaluated model, bits from the parameters, sizes against the float file.
        XCTAssertTrue(report.contains("| `convert` | float | 32 | 32 | 91.50 | – | – | 99.50 | 4,000 | 100.0 |"), report)
        XCTAssertTrue(report.contains("| `ptq[bits=4]` | PTQ | 4 | 4 | 79.50 | 79.40 | 99.90 | 99.50 | 2,000 | 50.0 |"), report)
        XCTAssertTrue(report.contains("| `qat[bits=2,lr=0.001]` | QAT | 2 | 2 | 86.00 | 85.90 | 99.90 | 99.50 | 1,012 | 25.3 |"), report)
        XCTAssertTrue(report.contains("| `ptq-w4a8` | PTQ | 4 | 8 | 79.50 |"), report)
        XCTAssertEqual(report.components(separatedBy: "| `qat[").count - 1, 12, "6 QAT instances: a stage row and a result row each")
        XCTAssertTrue(report.contains("evaluated by"), "two evaluate stages: the column says which")
        XCTAssertTrue(report.contains("![accuracy vs bits](accuracy-vs-bits.svg)"), report)
        XCTAssertTrue(report.contains("![model size vs accuracy](size-vs-accuracy.svg)"), report)
        XCTAssertTrue(report.contains("No latency was measured in this run"), report)
        XCTAssertFalse(report.contains("per_class"), "list metrics stay out of the tables")

        let accuracy = try SVGContent(folder.appendingPathComponent("accuracy-vs-bits.svg"))
        XCTAssertEqual(accuracy.series, ["PTQ", "PTQ, W ≠ A (at W bits)", "QAT lr=0.0001", "QAT lr=0.001"], "one QAT line per learning rate")
        XCTAssertEqual(accuracy.references, ["float"])
        XCTAssertEqual(accuracy.polylines, 3, "PTQ and both QAT series are lines; W4A8 is a marker")
        XCTAssertTrue(accuracy.texts.contains("bits of weights and activations") && accuracy.texts.contains("top-1 accuracy (%)"))
        XCTAssertTrue(accuracy.texts.contains("W4A8"), "the mixed-bit marker is labelled")
        XCTAssertTrue(["2", "4", "8"].allSatisfy(accuracy.texts.contains), "integer bit ticks: \(accuracy.texts)")

        let size = try SVGContent(folder.appendingPathComponent("size-vs-accuracy.svg"))
        XCTAssertEqual(size.series, ["float", "PTQ", "QAT"])
        XCTAssertTrue(size.texts.contains("qat[bits=4,lr=0.0001]"), "every marker is labelled with its model")
        XCTAssertEqual(size.polylines, 0)
    }

    func testLatencyPlotOnlyWhenMeasured() throws {
        let project = try TemporaryProject()
        let record = try project.run("""
            stages:
              convert: {uses: convert}
              ptq: {uses: quantize, needs: convert}
              evaluate: {uses: evaluate, needs: [convert, ptq]}
              bench: {uses: latency, needs: [convert, ptq]}
            """, registry: Self.registry())
        let folder = runDirectory(project, record)
        let report = try String(contentsOf: folder.appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("![int8 vs float latency](latency.svg)"), report)
        XCTAssertTrue(report.contains("| `ptq` | 2.500 | 5.000 |"), report)
        XCTAssertTrue(report.contains("| `convert` | – | 1.500 |"), report)
        XCTAssertFalse(report.contains("No latency was measured"), report)
        let latency = try SVGContent(folder.appendingPathComponent("latency.svg"))
        XCTAssertEqual(latency.series, ["int8 engine", "float engine"])
        XCTAssertEqual(latency.rects, 3, "convert: float only; ptq: int8 and float")
    }

    func testFailedRunStillWritesReport() throws {
        let project = try TemporaryProject()
        XCTAssertThrowsError(try project.run("""
            stages:
              convert: {uses: convert}
              ptq: {uses: fail, needs: convert}
              evaluate: {uses: evaluate, needs: [convert, ptq]}
            """, registry: Self.registry()))
        let run = try XCTUnwrap(RunHistory(store: project.store).recentRuns(limit: 1).first)
        XCTAssertFalse(run.succeeded)
        let report = try String(contentsOf: runDirectory(project, run).appendingPathComponent("report.md"), encoding: .utf8)
        XCTAssertTrue(report.contains("**FAILED**"), report)
        XCTAssertTrue(report.contains("| 2 | `ptq` | fail | **failed** |"), report)
        XCTAssertTrue(report.contains("| 3 | `evaluate` | evaluate | **skipped** |"), report)
        XCTAssertTrue(report.contains("deliberate failure in ptq"), report)
        XCTAssertTrue(report.contains("not run: 'ptq' failed"), report)
        XCTAssertTrue(report.contains("No model was evaluated in this run (no `evaluate` stage finished)"), report)
        let files = try FileManager.default.contentsOfDirectory(atPath: runDirectory(project, run).path).sorted()
        XCTAssertEqual(files, ["report.md", "run.json"], "no data, no plots")
    }

    /// Names a hostile label could break the XML with are escaped.
    func testSVGEscapesTextAndHandlesOnePoint() throws {
        let plot = SVGPlot(title: "a < b & \"c\"", xLabel: "x <", yLabel: "y >",
                           series: [SVGPlot.Series(name: "PTQ <&>", points: [SVGPlot.Point(x: 4, y: 80, label: "it's")])],
                           referenceLines: [SVGPlot.ReferenceLine(y: 80, name: "float & co")], integerX: true)
        let content = try SVGContent(data: Data(plot.render().utf8))
        XCTAssertEqual(content.series, ["PTQ <&>"])
        XCTAssertEqual(content.references, ["float & co"])
        XCTAssertTrue(content.texts.contains("it's"))
        XCTAssertTrue(content.texts.contains("a < b & \"c\""))
    }

    // MARK: - The binary

    func qatflow(_ arguments: [String], in directory: URL) throws -> QatflowOutcome { try runQatflow(arguments, in: directory) }

    /// The real stages on a small pipeline, through the binary: `run` names the report, `report` prints its path
    /// (for `last`, a run id prefix, the manifest, and a run whose report was deleted), `show` lists the models.
    func testReportAndShowCommandsOnARealRun() throws {
        let project = try TemporaryProject()
        try FileManager.default.createDirectory(at: project.directory.appendingPathComponent("models"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: CLITests.model, to: project.directory.appendingPathComponent("models/m.onnx"))
        try project.write("""
            datasets:
              small: {source: fashion-mnist, split: test, limit: 200}
            stages:
              convert: {uses: convert, with: {model: models/m.onnx}}
              quantize: {uses: quantize, needs: convert, with: {images: 50, batch: 50, method: max}}
              evaluate: {uses: evaluate, needs: [convert, quantize], with: {dataset: small}}
            """, to: "p.yaml")
        let run = try qatflow(["run", "p.yaml", "--quiet"], in: project.directory)
        XCTAssertEqual(run.status, 0, run.stderr)
        let record = try XCTUnwrap(RunHistory(store: project.store).recentRuns(limit: 1).first)
        let expected = ".qatflow/runs/\(record.id)/report.md"
        XCTAssertTrue(run.stdout.contains("report: \(expected)"), run.stdout)

        for arguments in [["report"], ["report", "last"], ["report", String(record.id.prefix(19))], ["report", "p.yaml"]] {
            let report = try qatflow(arguments, in: project.directory)
            XCTAssertEqual(report.status, 0, "\(arguments): \(report.stderr)")
            XCTAssertEqual(report.stdout, expected + "\n", "\(arguments)")
        }
        let reportURL = project.directory.appendingPathComponent(expected)
        let text = try String(contentsOf: reportURL, encoding: .utf8)
        XCTAssertTrue(text.contains("| `quantize` | PTQ | 8 | 8 |"), text)
        XCTAssertTrue(text.contains("on `small` (200 images)"), text)
        for plot in [RunReport.accuracyVsBitsFile, RunReport.sizeVsAccuracyFile] {
            let content = try SVGContent(reportURL.deletingLastPathComponent().appendingPathComponent(plot))
            XCTAssertTrue(content.series.contains("PTQ"), "\(plot): \(content.series)")
        }

        // A run without a report (recorded before reports existed) gets one when asked for.
        try FileManager.default.removeItem(at: reportURL)
        let regenerated = try qatflow(["report"], in: project.directory)
        XCTAssertEqual(regenerated.stdout, expected + "\n", regenerated.stderr)
        XCTAssertEqual(try String(contentsOf: reportURL, encoding: .utf8), text)

        let show = try qatflow(["show", "p.yaml"], in: project.directory)
        XCTAssertEqual(show.status, 0, show.stderr)
        let modelLine = try XCTUnwrap(show.stdout.split(separator: "\n").first { $0.contains(" quantize ") && $0.contains("PTQ") }, show.stdout)
        XCTAssertTrue(modelLine.contains("W8A8"), String(modelLine))
        XCTAssertTrue(show.stdout.contains("stages:"), show.stdout)

        let missing = try qatflow(["report", "nope"], in: project.directory)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("no run 'nope'"), missing.stderr)
    }
}

/// What a test needs from an SVG: it parses as XML, and the names of its series, reference lines and texts.
struct SVGContent {
    var series: [String] = []
    var references: [String] = []
    var texts: [String] = []
    var polylines = 0
    /// `rect`s inside series (bars), not the frame.
    var rects = 0

    init(_ url: URL) throws { try self.init(data: try Data(contentsOf: url)) }

    init(data: Data) throws {
        let delegate = Collector()
        let parser = XMLParser(data: data)
        parser.delegate = delegate
        guard parser.parse() else {
            throw CLITestError("not well-formed XML: \(parser.parserError.map(String.init(describing:)) ?? "?") at line \(parser.lineNumber)")
        }
        XCTAssertEqual(delegate.root, "svg")
        series = delegate.series
        references = delegate.references
        texts = delegate.texts
        polylines = delegate.polylines
        rects = delegate.rects
    }

    private final class Collector: NSObject, XMLParserDelegate {
        var root: String?
        var series: [String] = []
        var references: [String] = []
        var texts: [String] = []
        var polylines = 0
        var rects = 0
        private var text: String?
        private var seriesDepth = 0
        private var depth = 0

        func parser(_ parser: XMLParser, didStartElement element: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            if root == nil { root = element }
            depth += 1
            if element == "g", attributes["class"] == "series", let name = attributes["data-series"] {
                series.append(name)
                seriesDepth = depth
            }
            if element == "g", attributes["class"] == "reference", let name = attributes["data-series"] { references.append(name) }
            if element == "polyline" { polylines += 1 }
            if element == "rect" && seriesDepth > 0 { rects += 1 }
            if element == "text" { text = "" }
        }

        func parser(_ parser: XMLParser, foundCharacters string: String) { text? += string }

        func parser(_ parser: XMLParser, didEndElement element: String, namespaceURI: String?, qualifiedName: String?) {
            if element == "text", let text { texts.append(text) }
            if element == "text" { text = nil }
            if depth == seriesDepth { seriesDepth = 0 }
            depth -= 1
        }
    }
}
