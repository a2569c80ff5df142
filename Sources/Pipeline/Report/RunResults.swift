import Foundation

/// How a model was made, as the results tables and plots group it.
public enum ModelMethod: String, Sendable, CaseIterable {
    case float
    /// Post-training quantization (`quantize`).
    case ptq = "PTQ"
    /// Quantization-aware training (`qat`).
    case qat = "QAT"
    /// A quantized model from another kind of stage (e.g. `export` of a quantized model): bits unknown.
    case quantized

    public var isQuantized: Bool { self != .float }
}

/// One model as one evaluation saw it: a row of `report.md`'s results table and of `qatflow show`.
///
/// Read from a run record alone: an `evaluate` stage's metrics `top1/<model>`, `top5/<model>`,
/// `top1_simulated/<model>` and `agreement/<model>` name the model's stage instance; that instance's kind says
/// float/PTQ/QAT, its parameters (`bits`, `weight_bits`, `activation_bits`) the bits, its `model` artifact the
/// file size.
public struct ModelResult: Sendable {
    public let run: String
    /// The model's stage instance, e.g. `qat[bits=4,lr=0.001]`.
    public let model: String
    /// The model stage's kind (`convert`, `quantize`, `qat`, ...).
    public let kind: String
    public let method: ModelMethod
    /// nil for a float model or when the producing stage does not say.
    public let weightBits: Int?
    public let activationBits: Int?
    /// Percent; the int8 engine's for a quantized model (the evaluate stage runs quantized models on it).
    public let top1: Double
    public let top5: Double?
    /// Percent: the quantized model's float simulation (fake quant).
    public let top1Simulated: Double?
    /// Percent of images where the int8 engine and the simulation predict the same class.
    public let agreement: Double?
    public let fileBytes: Int?
    /// The float model's file size in the same evaluation (or run), for "% of float".
    public let floatBytes: Int?
    /// The evaluate stage instance.
    public let evaluation: String
    public let dataset: String?
    public let images: Int?
    /// The model stage's parameters (defaults filled in).
    public let parameters: [String: JSONValue]

    public var sizePercentOfFloat: Double? {
        guard let fileBytes, let floatBytes, floatBytes > 0 else { return nil }
        return 100 * Double(fileBytes) / Double(floatBytes)
    }

    /// `W8A8`, `W4A8`, `float`, or `?` when a quantized model's bits are unknown.
    public var bitsLabel: String {
        guard method.isQuantized else { return "float" }
        guard let weightBits, let activationBits else { return "?" }
        return "W\(weightBits)A\(activationBits)"
    }
}

/// A latency a stage measured for a model: metrics `latency_ms/<model>` (the model's own engine: int8 for a
/// quantized model, float otherwise), `latency_ms_int8/<model>` and `latency_ms_float/<model>` (`evaluate` writes
/// the engine-specific ones); the report draws the latency plot when some stage does.
public struct ModelLatency: Sendable {
    public let model: String
    public var int8Milliseconds: Double?
    public var floatMilliseconds: Double?
}

public enum RunResults {
    /// Every (evaluation, model) pair of the run, in stage order of the evaluations, then `needs:` order of
    /// the models as the metrics list them (sorted by the models' position in the run).
    public static func models(in run: RunRecord) -> [ModelResult] {
        let stages = Dictionary(run.stages.map { ($0.instance, $0) }, uniquingKeysWith: { first, _ in first })
        let order = Dictionary(run.stages.enumerated().map { ($0.element.instance, $0.offset) }, uniquingKeysWith: { first, _ in first })
        var rows: [ModelResult] = []
        for evaluation in run.stages {
            let evaluated = perModelMetrics(evaluation.metrics, prefix: "top1", in: stages)
                .sorted { (order[$0.model] ?? 0) < (order[$1.model] ?? 0) }
            guard !evaluated.isEmpty else { continue }
            let models = evaluated.compactMap { stages[$0.model] }
            // The float reference: a float model evaluated alongside, else the run's first float-producing stage.
            let floatReference = models.first { method(of: $0, metrics: evaluation.metrics) == .float && fileBytes(of: $0) != nil }
                ?? run.stages.first { ["convert", "train"].contains($0.kind) && fileBytes(of: $0) != nil }
            for (name, top1) in evaluated {
                guard let stage = stages[name] else { continue }
                let modelMethod = method(of: stage, metrics: evaluation.metrics)
                let bits: (weight: Int?, activation: Int?) = modelMethod == .ptq || modelMethod == .qat ? self.bits(stage.parameters) : (nil, nil)
                rows.append(ModelResult(
                    run: run.id, model: name, kind: stage.kind, method: modelMethod,
                    weightBits: bits.weight, activationBits: bits.activation, top1: top1,
                    top5: evaluation.metrics["top5/\(name)"]?.doubleValue,
                    top1Simulated: evaluation.metrics["top1_simulated/\(name)"]?.doubleValue,
                    agreement: evaluation.metrics["agreement/\(name)"]?.doubleValue,
                    fileBytes: fileBytes(of: stage), floatBytes: floatReference.flatMap(fileBytes(of:)),
                    evaluation: evaluation.instance, dataset: evaluation.parameters["dataset"]?.stringValue,
                    images: evaluation.metrics["images"]?.intValue, parameters: stage.parameters))
            }
        }
        return rows
    }

    /// What `qatflow show` prints first: one row per evaluated model across the runs (newest run first, as
    /// given), or nil when no run evaluated a model.
    public static func table(_ runs: [RunRecord]) -> String? {
        let rows = runs.flatMap(models(in:))
        guard !rows.isEmpty else { return nil }
        let severalEvaluations = Dictionary(grouping: rows, by: \.run).values.contains { Set($0.map(\.evaluation)).count > 1 }
        let header = ["run", "model", "kind", "bits", "top-1 %", "simulated %", "agreement %", "top-5 %", "file", "% of float"]
            + (severalEvaluations ? ["evaluated by"] : [])
        let format = { (value: Double?) in value.map { String(format: "%.2f", $0) } ?? "-" }
        let lines = rows.map { row in
            [row.run, row.model, row.method.rawValue, row.bitsLabel, format(row.top1), format(row.top1Simulated),
             format(row.agreement), format(row.top5), row.fileBytes.map(ByteCount.format) ?? "-",
             row.sizePercentOfFloat.map { String(format: "%.1f", $0) } ?? "-"]
                + (severalEvaluations ? ["\(row.evaluation) (\(row.dataset ?? "?"), \(row.images.map(String.init) ?? "?") images)"] : [])
        }
        return TextTable.render(header: header, rows: lines).joined(separator: "\n")
    }

    /// Latencies measured in the run, by model, in run order.
    public static func latencies(in run: RunRecord) -> [ModelLatency] {
        let stages = Dictionary(run.stages.map { ($0.instance, $0) }, uniquingKeysWith: { first, _ in first })
        var byModel: [String: ModelLatency] = [:]
        for stage in run.stages {
            for (prefix, engine) in [("latency_ms", nil), ("latency_ms_int8", "int8"), ("latency_ms_float", "float")] as [(String, String?)] {
                for (model, milliseconds) in perModelMetrics(stage.metrics, prefix: prefix, in: stages) {
                    var entry = byModel[model] ?? ModelLatency(model: model)
                    let quantized = stages[model].map { method(of: $0, metrics: stage.metrics).isQuantized } ?? false
                    if (engine ?? (quantized ? "int8" : "float")) == "int8" {
                        entry.int8Milliseconds = milliseconds
                    } else {
                        entry.floatMilliseconds = milliseconds
                    }
                    byModel[model] = entry
                }
            }
        }
        return run.stages.compactMap { byModel[$0.instance] }
    }

    /// Metric names of the form `NAME/<instance>` that refer to a stage instance of the run (per-model metrics).
    public static func isPerModelMetric(_ name: String, in run: RunRecord) -> Bool {
        guard let slash = name.firstIndex(of: "/") else { return false }
        let model = name[name.index(after: slash)...]
        return run.stages.contains { $0.instance == model }
    }

    /// `PREFIX/<instance>` metrics with a number, keyed by instance (instances of the run only).
    static func perModelMetrics(_ metrics: [String: JSONValue], prefix: String, in stages: [String: StageRunRecord]) -> [(model: String, value: Double)] {
        metrics.compactMap { name, value in
            guard name.hasPrefix(prefix + "/"), let number = value.doubleValue else { return nil }
            let model = String(name.dropFirst(prefix.count + 1))
            return stages[model] == nil ? nil : (model: model, value: number)
        }
    }

    static func method(of stage: StageRunRecord, metrics evaluation: [String: JSONValue]) -> ModelMethod {
        switch stage.kind {
        case "quantize": return .ptq
        case "qat": return .qat
        case "convert", "train": return .float
        default:
            // Other kinds pass a model on (export): the evaluation ran it on the int8 engine iff it is quantized.
            return evaluation["top1_simulated/\(stage.instance)"] != nil ? .quantized : .float
        }
    }

    /// Bits of weights and activations from `bits` / `weight_bits` / `activation_bits` / `target` (quantize and qat).
    static func bits(_ parameters: [String: JSONValue]) -> (weight: Int?, activation: Int?) {
        guard parameters["bits"] != nil || parameters["weight_bits"] != nil else { return (nil, nil) }
        let bits = DeploymentTargetParameter.bits(parameters)
        return (bits.weight, bits.activation)
    }

    /// The model artifact's size as stored, else a `file_bytes` metric.
    static func fileBytes(of stage: StageRunRecord) -> Int? {
        stage.outputs["model"]?.size ?? stage.metrics["file_bytes"]?.intValue
    }
}
