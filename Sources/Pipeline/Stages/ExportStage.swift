import Foundation
import Datasets
import Graph
import ONNX

/// A file `export` can write.
public enum ExportFormat: String, CaseIterable, Sendable {
    /// Our model file (`ModelFile`), float or quantized.
    case qatflow
    /// Standard ONNX QDQ (uint8 activations, int8 per-channel weights, int32 bias) of a quantized model.
    case onnxQDQ = "onnx-qdq"
    /// Float ONNX of a float model.
    case onnx

    /// The artifact name the stage hands the file back under (what `outputs:` refers to). The model file is
    /// `model`, like every stage's model, so an `evaluate` may read an export's output.
    public var artifact: String {
        switch self {
        case .qatflow: return "model"
        case .onnxQDQ: return "onnx-qdq"
        case .onnx: return "onnx"
        }
    }

    public var fileName: String {
        switch self {
        case .qatflow: return "model.safetensors"
        case .onnxQDQ: return "model.qdq.onnx"
        case .onnx: return "model.onnx"
        }
    }

    public static var names: String { allCases.map(\.rawValue).joined(separator: ", ") }

    /// What a model is exported as when `formats` is not given.
    public static func defaults(quantized: Bool) -> [ExportFormat] {
        quantized ? [.qatflow, .onnxQDQ] : [.qatflow, .onnx]
    }

    /// Why this format cannot hold the model, or nil when it can.
    func refusal(quantized: Bool, model: String) -> String? {
        switch self {
        case .onnxQDQ where !quantized:
            return "\(model) is a float model (no QuantizeLinear node), but onnx-qdq needs a quantized model; quantize it first or export it as onnx"
        case .onnx where quantized:
            return "\(model) is a quantized (QDQ) model, but onnx writes float models; export it as onnx-qdq"
        default:
            return nil
        }
    }
}

/// `export`: writes the one upstream model as the files listed in `formats` plus `model-card.json` (bits, scheme,
/// calibration settings, accuracy from upstream `evaluate` stages, preprocessing, file sizes, source digest).
///
/// It takes exactly one model stage; `needs:` may add `evaluate` stages whose results for that model go into the
/// card. The input rule is `.models` because the planner's `.oneModel` counts every `needs:` entry, evaluations
/// included; the one-model rule is checked when the stage runs.
public enum ExportStage {
    public static let modelCardFileName = "model-card.json"
    public static let modelCardArtifact = "model-card"

    public static let kind = StageKind(
        name: "export",
        summary: "write the upstream model as qatflow / ONNX QDQ / float ONNX files plus model-card.json",
        version: 1,
        parameters: [
            ParameterSpec("formats", .stringList, default: .null,
                          help: "files to write, of \(ExportFormat.names); default: qatflow, onnx-qdq for a quantized model, qatflow, onnx for a float one"),
            ParameterSpec("opset", .int, default: .int(13), help: "ONNX opset of ONNX files (13–18; per-channel DequantizeLinear needs 13)"),
            ParameterSpec("dataset", .dataset, default: .null,
                          help: "the dataset whose preprocessing the model expects, for the model card (default: what the model file records, else fashion-mnist's); no images are read"),
        ],
        inputs: .models,
        resources: StageResources(cpus: 1, memoryMB: 2048, minutes: 15),
        run: run)

    static func run(_ context: StageContext) throws -> StageResult {
        let requested = try requestedFormats(context)
        let opset = try context.int("opset")
        guard ONNXExporter.supportedOpsets.contains(opset) else {
            throw StageFailure("stage '\(context.stageID)': opset \(opset) is not supported (expected \(ONNXExporter.supportedOpsets.lowerBound)–\(ONNXExporter.supportedOpsets.upperBound))")
        }
        let declared = try context.optionalDataset("dataset")
        let (source, evaluations) = try splitInputs(context)
        let sourceURL = source.artifacts["model"]!
        // A plain command's file as the user typed it (relative URLs keep their relative path).
        let described = source.kind == "file" ? sourceURL.relativePath : "stage '\(source.stageID)'"
        let graph = try ModelLoader.load(sourceURL)
        // The card describes what the model expects: the stage's dataset when given, else what quantize/qat/train
        // recorded in the file, else (an outside model that records nothing) the project's Fashion-MNIST convention.
        let recorded = ImagePreprocessing(json: graph.metadata[ImagePreprocessing.metadataKey])
        let preprocessing = try declared.map(ImagePreprocessing.init) ?? recorded ?? ImagePreprocessing(DatasetSpec(shorthand: "fashion-mnist:train"))
        let preprocessingOrigin = declared != nil ? "the export stage's dataset parameter" : recorded != nil ? "recorded in the model file" : "not recorded in the model file: the Fashion-MNIST convention"
        let quantized = Evaluator.isQuantized(graph)
        let formats = requested ?? ExportFormat.defaults(quantized: quantized)
        if let refusal = formats.lazy.compactMap({ $0.refusal(quantized: quantized, model: described) }).first {
            throw StageFailure(refusal)
        }

        var written: [(format: ExportFormat, url: URL)] = []
        for format in formats {
            let url = context.outputDirectory.appendingPathComponent(format.fileName)
            switch format {
            case .qatflow: try ModelFile.write(graph, to: url)
            case .onnxQDQ, .onnx: try ONNXExporter.write(graph, to: url, opset: opset)
            }
            written.append((format, url))
        }

        let card = try ModelCard(graph: graph, quantized: quantized, source: source, evaluations: evaluations,
                                 preprocessing: preprocessing, preprocessingOrigin: preprocessingOrigin)
        let files = try written.map { try card.fileEntry(format: $0.format, url: $0.url, opset: opset) }
        let cardURL = context.outputDirectory.appendingPathComponent(modelCardFileName)
        try ArtifactStore.writeAtomically(try card.encoded(files: files), to: cardURL)

        var artifacts = [modelCardArtifact: modelCardFileName]
        var metrics: [String: JSONValue] = [
            "formats": .array(formats.map { .string($0.rawValue) }),
            "float_reference_bytes": .int(card.floatReference.bytes),
        ]
        if formats.contains(.onnxQDQ) {
            metrics["onnxruntime_x86_saturating_layers"] = .int(card.saturatingLayers.count)
            if let warning = PairSaturationCheck.warning(for: graph, file: described) {
                metrics[StageResult.warningsMetric] = .array([.string(warning)])
            }
        }
        for (format, url) in written {
            artifacts[format.artifact] = format.fileName
            let bytes = try fileSize(url)
            metrics["bytes/\(format.rawValue)"] = .int(bytes)
            metrics["size_ratio/\(format.rawValue)"] = .double(card.floatReference.ratio(bytes))
        }
        if let first = card.accuracy.first {
            if let top1 = first.top1 { metrics["top1"] = .double(top1) }
            if let top5 = first.top5 { metrics["top5"] = .double(top5) }
        }
        return StageResult(artifacts: artifacts, metrics: metrics)
    }

    /// `formats` checked before any model is read: known names, no duplicates; nil when not given.
    static func requestedFormats(_ context: StageContext) throws -> [ExportFormat]? {
        guard let values = context.parameters["formats"]?.arrayValue else { return nil }
        var formats: [ExportFormat] = []
        for value in values {
            let name = value.stringValue ?? value.canonical
            guard let format = ExportFormat(rawValue: name) else {
                throw StageFailure("stage '\(context.stageID)': unknown format '\(name)' in formats; expected \(ExportFormat.names)" + Suggestion.didYouMean(name, among: ExportFormat.allCases.map(\.rawValue)))
            }
            if !formats.contains(format) { formats.append(format) }
        }
        guard !formats.isEmpty else {
            throw StageFailure("stage '\(context.stageID)': formats is empty; list at least one of \(ExportFormat.names)")
        }
        return formats
    }

    /// The one model input and the evaluations of it. Any other upstream stage is a manifest mistake worth naming.
    static func splitInputs(_ context: StageContext) throws -> (model: StageInput, evaluations: [StageInput]) {
        let models = context.inputs.filter { $0.artifacts["model"] != nil }
        guard models.count == 1, let model = models.first else {
            let listed = models.isEmpty ? "none" : models.map { "'\($0.stageID)'" }.joined(separator: ", ")
            throw StageFailure("stage '\(context.stageID)' exports exactly one model; its upstream stages with a model: \(listed). Use one export stage per model")
        }
        let others = context.inputs.filter { $0.artifacts["model"] == nil }
        for other in others where other.metrics["top1/\(model.stageID)"] == nil {
            throw StageFailure("stage '\(context.stageID)': upstream stage '\(other.stageID)' (\(other.kind)) has no accuracy for '\(model.stageID)'; besides the model, export needs only evaluate stages that evaluated it")
        }
        return (model, others)
    }

    static func fileSize(_ url: URL) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
    }
}

/// The facts `model-card.json` records, gathered from the graph, its quantization metadata, the upstream
/// stages and the written files. Deterministic (no dates): the same inputs give the same card bytes, so the
/// card does not defeat the cache's early cut-off.
struct ModelCard {
    struct FloatReference {
        let bytes: Int
        /// How `bytes` was obtained: the float source file itself, or 4 bytes per parameter.
        let basis: String
        func ratio(_ size: Int) -> Double { bytes > 0 ? Double(size) / Double(bytes) : 0 }
    }

    struct Accuracy {
        let stage: String
        let top1: Double?
        let top5: Double?
        let json: JSONValue
    }

    let model: [String: JSONValue]
    let quantization: JSONValue
    let bits: JSONValue
    let accuracy: [Accuracy]
    let preprocessing: JSONValue
    let source: JSONValue
    let floatReference: FloatReference
    /// Layers ONNX Runtime may compute wrongly on x86 CPUs without VNNI (`PairSaturationCheck`).
    let saturatingLayers: [PairSaturationCheck.Layer]

    init(graph: Graph, quantized: Bool, source input: StageInput, evaluations: [StageInput], preprocessing spec: ImagePreprocessing,
         preprocessingOrigin: String) throws {
        let sourceURL = input.artifacts["model"]!
        let sourceBytes = try ExportStage.fileSize(sourceURL)
        let summary = try? GraphSummary(graph: graph)
        model = [
            "name": .string(graph.name),
            "quantized": .bool(quantized),
            "parameters": summary.map { .int($0.totalParameters) } ?? .null,
            "macs_per_image": summary.map { .int($0.totalMultiplyAccumulates) } ?? .null,
            "inputs": .array(graph.inputs.map(Self.describe)),
            "outputs": .array(graph.outputs.map(Self.describe)),
        ]
        if quantized {
            floatReference = FloatReference(bytes: 4 * (summary?.totalParameters ?? 0), basis: "float32 parameters (4 bytes each)")
        } else {
            floatReference = FloatReference(bytes: sourceBytes, basis: "the float source model file")
        }
        saturatingLayers = quantized ? PairSaturationCheck.layersThatMaySaturate(in: graph) : []
        bits = quantized ? Self.quantizedBits(of: graph) : .object(["weights": .int(32), "activations": .int(32)])
        quantization = quantized ? Self.quantizationSettings(graph, upstreamMetrics: input.metrics) : .null
        accuracy = evaluations.map { Self.accuracy(of: input.stageID, in: $0) }
        func numbers(_ values: [Double]) -> JSONValue { values.count == 1 ? .double(values[0]) : .array(values.map(JSONValue.double)) }
        var preprocessing: [String: JSONValue] = [
            "dataset": spec.source.map(JSONValue.string) ?? .null,
            "from": .string(preprocessingOrigin),
            "pad": .int(spec.pad),
            "mean": numbers(spec.mean),
            "std": numbers(spec.std),
            "channels": .string(spec.channels.rawValue),
            "formula": .string("zero-pad each side by pad pixels (pixel value 0), then x = (pixel / 255 - mean) / std"),
            "layout": .string("NCHW float32"),
        ]
        if spec.source.map({ DatasetSpec.imageSourceNames.contains($0) }) ?? true {
            switch spec.resize?.count {
            case 1?: preprocessing["resize"] = .int(spec.resize![0])
            case 2?: preprocessing["resize"] = .array(spec.resize!.map(JSONValue.int))
            default: break
            }
            if let crop = spec.crop { preprocessing["crop"] = .int(crop) }
            preprocessing["formula"] = .string("decode, convert to channels, resize (the shorter side, bilinear with antialiasing as Pillow), center crop, zero-pad each side by pad pixels (pixel value 0), then x = (pixel / 255 - mean[c]) / std[c]")
        }
        self.preprocessing = .object(preprocessing)
        var sourceObject: [String: JSONValue] = [
            "sha256": .string(try Digest.ofFile(at: sourceURL)),
            "bytes": .int(sourceBytes),
            "format": .string(try ModelLoader.format(of: sourceURL).rawValue),
        ]
        if input.kind == "file" {
            sourceObject["file"] = .string(sourceURL.lastPathComponent)
        } else {
            sourceObject["stage"] = .string(input.stageID)
            sourceObject["kind"] = .string(input.kind)
        }
        if let original = graph.metadata["onnx.source"] { sourceObject["original_onnx"] = .string(original) }
        source = .object(sourceObject)
    }

    func fileEntry(format: ExportFormat, url: URL, opset: Int) throws -> JSONValue {
        let bytes = try ExportStage.fileSize(url)
        var entry: [String: JSONValue] = [
            "format": .string(format.rawValue),
            "artifact": .string(format.artifact),
            "file": .string(format.fileName),
            "bytes": .int(bytes),
            "sha256": .string(try Digest.ofFile(at: url)),
            "ratio_to_float": .double(floatReference.ratio(bytes)),
        ]
        if format != .qatflow { entry["opset"] = .int(opset) }
        if format == .onnxQDQ {
            // Whether ONNX Runtime computes this file exactly on every x86 CPU, not only on those with VNNI.
            entry["onnxruntime_x86"] = .object([
                "exact_without_vnni": .bool(saturatingLayers.isEmpty),
                "layers_that_may_saturate": .array(saturatingLayers.map { .string($0.node) }),
            ])
        }
        return .object(entry)
    }

    /// Pretty, key-sorted JSON.
    func encoded(files: [JSONValue]) throws -> Data {
        let card: JSONValue = .object([
            "card_version": .int(1),
            "qatflow_version": .string(QatflowVersion.string),
            "model": .object(model),
            "bits": bits,
            "scheme": quantization.objectValue?["scheme"] ?? .string(quantization == .null ? "float32" : "QDQ"),
            "quantization": quantization,
            "accuracy": .array(accuracy.map(\.json)),
            "preprocessing": preprocessing,
            "source": source,
            "float_reference": .object(["bytes": .int(floatReference.bytes), "basis": .string(floatReference.basis)]),
            "files": .array(files),
        ])
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return try encoder.encode(card) + Data("\n".utf8)
    }

    // MARK: - Gathering

    private static func describe(_ info: ValueInfo) -> JSONValue {
        .object([
            "name": .string(info.name),
            "dtype": .string(info.dataType.rawValue),
            "shape": .array(info.shape.map { $0 < 0 ? .string("N") : .int($0) }),
        ])
    }

    /// Bits as the graph states them (the `bits` attributes), so mixed precision and QAT models are described
    /// by what they contain: activations from QuantizeLinear, weights from DequantizeLinear of int8 constants.
    private static func quantizedBits(of graph: Graph) -> JSONValue {
        func summarize(_ values: [Int]) -> JSONValue {
            let distinct = Array(Set(values)).sorted()
            if distinct.count == 1 { return .int(distinct[0]) }
            return distinct.isEmpty ? .null : .array(distinct.map(JSONValue.int))
        }
        let activations = graph.nodes.filter { $0.op == .quantizeLinear }.map { $0.int("bits", default: 8) }
        let weights = graph.nodes.filter { node in
            node.op == .dequantizeLinear && graph.initializers[node.inputs[0]]?.storage.dataType == .int8
        }.map { $0.int("bits", default: 8) }
        return .object(["weights": summarize(weights), "activations": summarize(activations)])
    }

    /// The graph's `qatflow.quantization` metadata (calibration or QAT settings, whatever the producer recorded),
    /// plus the calibration facts the producing stage reported as metrics.
    private static func quantizationSettings(_ graph: Graph, upstreamMetrics: [String: JSONValue]) -> JSONValue {
        var settings: [String: JSONValue] = [:]
        if let text = graph.metadata["qatflow.quantization"],
           let parsed = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)), let object = parsed.objectValue {
            settings = object
        } else {
            settings["scheme"] = .string("QDQ (the model carries no qatflow.quantization metadata)")
        }
        for key in ["calibration_images", "min_sqnr_db"] where settings[key] == nil {
            if let value = upstreamMetrics[key] { settings[key] = value }
        }
        return .object(settings)
    }

    /// `evaluate` reports `top1/<stage>` etc. (Evaluation.swift) for every model it ran; this model's entries
    /// and, for comparison, the top-1 of the other models it ran (e.g. the float source).
    private static func accuracy(of modelStage: String, in evaluation: StageInput) -> Accuracy {
        var entry: [String: JSONValue] = ["stage": .string(evaluation.stageID)]
        for name in ["top1", "top5", "top1_simulated", "agreement"] {
            if let value = evaluation.metrics["\(name)/\(modelStage)"] { entry[name] = value }
        }
        if let images = evaluation.metrics["images"] { entry["images"] = images }
        if let machine = evaluation.metrics["machine"] { entry["machine"] = machine }
        var others: [String: JSONValue] = [:]
        for (key, value) in evaluation.metrics where key.hasPrefix("top1/") && key != "top1/\(modelStage)" {
            others[String(key.dropFirst("top1/".count))] = value
        }
        if !others.isEmpty { entry["top1_of_other_models"] = .object(others) }
        return Accuracy(stage: evaluation.stageID, top1: entry["top1"]?.doubleValue, top5: entry["top5"]?.doubleValue,
                        json: .object(entry))
    }
}
