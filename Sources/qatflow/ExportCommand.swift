import ArgumentParser
import Foundation
import Pipeline

/// `qatflow export MODEL [--format F] -o OUT`: the `export` stage on one file, outside any manifest and cache.
/// Every check (format name, readable model, format fits the model) happens before anything is written, and
/// files reach their paths by temp + rename, so a failed export leaves nothing behind.
struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Write a model as a qatflow model file, ONNX QDQ (quantized models) or float ONNX (float models).")

    @Argument(help: "An ONNX file, a float qatflow model file or a quantized one.") var model: String
    @Option(help: ArgumentHelp("qatflow, onnx-qdq or onnx. Default: from OUT's extension (.safetensors: qatflow; .onnx: onnx-qdq for a quantized model, onnx for a float one).", valueName: "format"))
    var format: String?
    @Option(name: .shortAndLong, help: "Where to write the exported model.") var output: String
    @Option(help: "Also write the model card (JSON: bits, scheme, quantization settings, preprocessing, sizes, source digest) here.")
    var card: String?
    @Option(help: "ONNX opset (13–18).") var opset = 13
    @Option(help: "The dataset whose preprocessing the model expects, NAME:SPLIT, for the model card (default: what the model file records, else fashion-mnist's).")
    var dataset: String?

    func run() throws {
        do {
            let modelURL = URL(fileURLWithPath: model)
            let chosen = try chooseFormat(modelURL)
            var destinations = [chosen.artifact: URL(fileURLWithPath: output)]
            if let card { destinations[ExportStage.modelCardArtifact] = URL(fileURLWithPath: card) }
            let result = try DirectRun(kind: ExportStage.kind, quiet: true).run(
                parameters: ["formats": .array([.string(chosen.rawValue)]), "opset": .int(opset), "dataset": dataset.map(JSONValue.string) ?? .null],
                inputModels: [modelURL], destinations: destinations)
            let bytes = result.metrics["bytes/\(chosen.rawValue)"]?.intValue ?? 0
            let ratio = result.metrics["size_ratio/\(chosen.rawValue)"]?.doubleValue ?? 0
            printLine(String(format: "wrote %@ (%@, %d bytes, %.3f× the float size)%@", output, chosen.rawValue, bytes, ratio,
                             card.map { " and \($0)" } ?? ""))
            for warning in StageResult.warnings(in: result.metrics) { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
        } catch {
            throw fail(error)
        }
    }

    /// `--format`, else OUT's extension; for `.onnx` the model decides between QDQ and float.
    private func chooseFormat(_ modelURL: URL) throws -> ExportFormat {
        if let format {
            guard let chosen = ExportFormat(rawValue: format) else {
                throw StageFailure("export \(model): unknown format '\(format)'; expected one of \(ExportFormat.names)")
            }
            return chosen
        }
        switch URL(fileURLWithPath: output).pathExtension.lowercased() {
        case "safetensors":
            return .qatflow
        case "onnx":
            return Evaluator.isQuantized(try ModelLoader.load(modelURL)) ? .onnxQDQ : .onnx
        default:
            throw StageFailure("export \(model): cannot tell the format from '\(output)' (expected a .safetensors or .onnx file); pass --format \(ExportFormat.names.replacingOccurrences(of: ", ", with: "|"))")
        }
    }
}
