import Foundation
import Datasets
import Graph
import Inference
import Tensor

/// Top-1/top-5 accuracy, per-class accuracy and the confusion matrix of a classifier on a labelled set.
public struct ClassificationMetrics: Sendable {
    public let images: Int
    /// Percent.
    public let top1: Double
    /// Percent; equal to top-1 when the model has fewer than five classes.
    public let top5: Double
    /// Percent per class, in label order.
    public let perClass: [Double]
    /// `confusion[truth][predicted]` counts.
    public let confusion: [[Int]]
    public let classNames: [String]

    /// Per-class accuracy (percent) in label order, as a metric list.
    public var perClassMetric: JSONValue { .array(perClass.map(JSONValue.double)) }
    /// The confusion matrix (rows: true class, columns: predicted) as a metric.
    public var confusionMetric: JSONValue { .array(confusion.map { .array($0.map(JSONValue.int)) }) }

    public var json: JSONValue {
        .object([
            "images": .int(images),
            "top1": .double(top1),
            "top5": .double(top5),
            "per_class": .object(Dictionary(uniqueKeysWithValues: zip(classNames, perClass.map(JSONValue.double)))),
            "confusion": .array(confusion.map { .array($0.map(JSONValue.int)) }),
        ])
    }
}

/// Accumulates predictions batch by batch.
struct ClassificationTally {
    let classes: Int
    private(set) var images = 0
    private(set) var top1Hits = 0
    private(set) var top5Hits = 0
    private(set) var confusion: [[Int]]

    init(classes: Int) {
        self.classes = classes
        confusion = Array(repeating: Array(repeating: 0, count: classes), count: classes)
    }

    /// `logits` holds `labels.count` rows of `classes` scores. Returns each row's top-1 class.
    /// A label is in the top 5 when fewer than five classes outscore it (ties go to the lower class index,
    /// as for top-1), which needs no sort.
    @discardableResult
    mutating func add(logits: [Float], labels: ArraySlice<Int>) -> [Int] {
        var predictions: [Int] = []
        predictions.reserveCapacity(labels.count)
        for (row, label) in labels.enumerated() {
            let base = row * classes
            var predicted = 0
            for index in 1..<classes where logits[base + index] > logits[base + predicted] { predicted = index }
            let labelScore = logits[base + label]
            var outranking = 0
            for index in 0..<classes where logits[base + index] > labelScore || (logits[base + index] == labelScore && index < label) {
                outranking += 1
            }
            confusion[label][predicted] += 1
            if predicted == label { top1Hits += 1 }
            if outranking < 5 { top5Hits += 1 }
            images += 1
            predictions.append(predicted)
        }
        return predictions
    }

    func metrics(classNames: [String]) -> ClassificationMetrics {
        let perClass = confusion.enumerated().map { label, row in
            let total = row.reduce(0, +)
            return total == 0 ? 0 : 100 * Double(row[label]) / Double(total)
        }
        let names = classNames.count == classes ? classNames : (0..<classes).map(String.init)
        return ClassificationMetrics(images: images, top1: 100 * Double(top1Hits) / Double(max(images, 1)),
                                     top5: 100 * Double(top5Hits) / Double(max(images, 1)),
                                     perClass: perClass, confusion: confusion, classNames: names)
    }
}

/// Which engine runs a model.
public enum EvaluationEngine: String, Sendable {
    /// The float reference executor; for a QDQ model this is its fake-quant simulation.
    case float
    /// The int8 executor (QDQ models only).
    case int8
}

/// Runs a model over a labelled set.
public enum Evaluator {
    /// True for QDQ models (docs/quantization.md), which the int8 engine can run.
    public static func isQuantized(_ graph: Graph) -> Bool {
        graph.nodes.contains { $0.op == .quantizeLinear }
    }

    /// Top-1/top-5 of `graph` on `data`; `onPrediction` receives each image's top-1 class in order (for agreement checks).
    /// The model's one image input, after checking that the dataset's preprocessed images have its shape; the
    /// error says which preprocessing fields to set.
    @discardableResult
    public static func requireFit(_ graph: Graph, _ data: any ImageDataset) throws -> ValueInfo {
        guard let input = graph.inputs.first, graph.inputs.count == 1 else {
            throw StageFailure("model '\(graph.name)' has \(graph.inputs.count) inputs; qatflow needs exactly one image input")
        }
        let expected = Array(input.shape.dropFirst())
        let given = [data.channels, data.height, data.width]
        guard expected.count == 3, zip(expected, given).allSatisfy({ $0 == -1 || $0 == $1 }) else {
            throw StageFailure("model input '\(input.name)' takes \(formatShape(input.shape)) images, but the dataset gives N×\(given.map(String.init).joined(separator: "×")) after preprocessing; set the dataset's channels (gray, rgb, bgr), resize and crop, or pad (docs/manifest.md, Datasets)")
        }
        return input
    }

    public static func evaluate(_ graph: Graph, on data: any ImageDataset, batch: Int, engine: EvaluationEngine = .float,
                                threads: Int = 2, progress: ProgressReporter, label: String,
                                onPrediction: ((Int) -> Void)? = nil) throws -> ClassificationMetrics {
        guard data.isLabeled else {
            throw StageFailure("the dataset is a folder of images without class subfolders: it has no labels to evaluate against (use class subfolders or an image list)")
        }
        let input = try requireFit(graph, data)
        let run: ([String: Tensor]) throws -> [String: Tensor]
        switch engine {
        case .float:
            let executor = try FloatExecutor(graph: graph, threads: threads)
            run = executor.run
        case .int8:
            let executor = try Int8Executor(graph: graph, threads: threads)
            run = executor.run
        }
        guard let outputName = graph.outputs.first?.name else { throw StageFailure("model '\(graph.name)' has no output") }
        var tally: ClassificationTally?
        progress.begin("evaluate \(label) (\(engine.rawValue))", total: data.count)
        defer { progress.finish() }
        let batches = PrefetchedSequence(data, batch: batch)
        while let loaded = try batches.next() {
            let indices = 0..<loaded.count
            let labels = loaded.labels
            guard loaded.count > 0 else { progress.advance(by: batches.lastRequested); continue }
            let outputs = try run([input.name: Tensor(shape: [indices.count, data.channels, data.height, data.width], data: loaded.pixels)])
            guard let logits = outputs[outputName] else { throw StageFailure("model produced no output '\(outputName)'") }
            let classes = logits.count / indices.count
            if tally == nil {
                guard classes >= 2, logits.count == classes * indices.count else {
                    throw StageFailure("model output '\(outputName)' has shape \(formatShape(logits.shape)); expected N×classes logits")
                }
                guard classes >= data.classNames.count else {
                    throw StageFailure("model has \(classes) outputs but the dataset has \(data.classNames.count) classes")
                }
                tally = ClassificationTally(classes: classes)
            }
            let predicted = tally!.add(logits: logits.data, labels: labels[...])
            if let onPrediction { predicted.forEach(onPrediction) }
            progress.advance(by: batches.lastRequested)
        }
        return (tally ?? ClassificationTally(classes: data.classNames.count)).metrics(classNames: data.classNames)
    }

    static func formatShape(_ shape: [Int]) -> String {
        shape.map { $0 < 0 ? "N" : String($0) }.joined(separator: "×")
    }
}

/// `evaluate`: accuracy of every upstream model on one dataset, side by side. Besides top-1/top-5, each model's
/// per-class accuracy and confusion matrix are metrics (`per_class/<stage>`, `confusion/<stage>`), so run
/// records and `qatflow show` consumers get them without opening the report.
public enum EvaluateStage {
    public static let kind = StageKind(
        name: "evaluate",
        summary: "top-1/top-5, per-class accuracy and confusion matrix of each upstream model",
        version: 1,
        parameters: [
            ParameterSpec("dataset", .dataset, default: .string("fashion-mnist:test"), help: "a dataset declared under 'datasets:' or NAME:SPLIT"),
            ParameterSpec("batch", .int, default: .int(100), help: "images per forward pass"),
            ParameterSpec("latency_repeats", .int, default: .int(20), help: "timed batch-1 forward passes per model on one thread, on this machine's int8 engine for a quantized model and the float engine otherwise (median reported as latency_ms_int8/<model> or latency_ms_float/<model>); 0: no timing"),
        ],
        inputs: .models,
        resources: StageResources(cpus: 2, memoryMB: 4096, minutes: 60),
        run: run)

    /// Median milliseconds of one forward pass of one image (the dataset's first) on one thread, after warm-up.
    static func latency(_ graph: Graph, engine: EvaluationEngine, data: any ImageDataset, repeats: Int) throws -> Double {
        guard let input = graph.inputs.first else { throw StageFailure("model '\(graph.name)' has no input") }
        let first = try data.materializedSubset(1, seed: 0)
        let image = Tensor(shape: [1, data.channels, data.height, data.width], data: first.batch([0]).pixels)
        let run: ([String: Tensor]) throws -> [String: Tensor]
        switch engine {
        case .float: run = try FloatExecutor(graph: graph, threads: 1).run
        case .int8: run = try Int8Executor(graph: graph, threads: 1).run
        }
        for _ in 0..<3 { _ = try run([input.name: image]) }
        var samples: [Double] = []
        for _ in 0..<repeats {
            let start = DispatchTime.now().uptimeNanoseconds
            _ = try run([input.name: image])
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
        }
        return samples.sorted()[samples.count / 2]
    }

    static func run(_ context: StageContext) throws -> StageResult {
        let spec = try context.dataset("dataset")
        let batch = try context.int("batch")
        guard batch >= 1 else { throw StageFailure("stage '\(context.stageID)': batch must be ≥ 1") }
        let repeats = try context.int("latency_repeats")
        guard repeats >= 0 else { throw StageFailure("stage '\(context.stageID)': latency_repeats must be ≥ 0 (0: no timing), got \(repeats)") }
        let data = try context.openDataset(spec)
        var metrics: [String: JSONValue] = ["images": .int(data.count)]
        var details: [String: JSONValue] = [:]
        for (stageID, url) in context.inputModels() {
            let graph = try ModelLoader.load(url)
            if repeats > 0, data.count > 0 {
                let quantized = Evaluator.isQuantized(graph)
                let milliseconds = try latency(graph, engine: quantized ? .int8 : .float, data: data, repeats: repeats)
                metrics["\(quantized ? "latency_ms_int8" : "latency_ms_float")/\(stageID)"] = .double((milliseconds * 1000).rounded() / 1000)
            }
            guard Evaluator.isQuantized(graph) else {
                let result = try Evaluator.evaluate(graph, on: data, batch: batch, threads: context.threads, progress: context.progress, label: stageID)
                metrics["top1/\(stageID)"] = .double(result.top1)
                metrics["top5/\(stageID)"] = .double(result.top5)
                metrics["per_class/\(stageID)"] = result.perClassMetric
                metrics["confusion/\(stageID)"] = result.confusionMetric
                details[stageID] = result.json
                continue
            }
            // A quantized model is run by the int8 engine (its accuracy is the one reported) and by its float
            // simulation; the two must compute the same function, so their agreement is reported too.
            var int8Predictions: [Int] = [], simulatedPredictions: [Int] = []
            let int8 = try Evaluator.evaluate(graph, on: data, batch: batch, engine: .int8, threads: context.threads, progress: context.progress,
                                              label: stageID, onPrediction: { int8Predictions.append($0) })
            let simulated = try Evaluator.evaluate(graph, on: data, batch: batch, engine: .float, threads: context.threads, progress: context.progress,
                                                   label: stageID, onPrediction: { simulatedPredictions.append($0) })
            let agreement = 100 * Double(zip(int8Predictions, simulatedPredictions).filter { $0 == $1 }.count) / Double(max(int8Predictions.count, 1))
            metrics["top1/\(stageID)"] = .double(int8.top1)
            metrics["top5/\(stageID)"] = .double(int8.top5)
            metrics["per_class/\(stageID)"] = int8.perClassMetric
            metrics["confusion/\(stageID)"] = int8.confusionMetric
            metrics["top1_simulated/\(stageID)"] = .double(simulated.top1)
            metrics["agreement/\(stageID)"] = .double(agreement)
            var report = int8.json.objectValue ?? [:]
            report["engine"] = .string("int8")
            report["simulated"] = simulated.json
            report["top1_agreement_with_simulation"] = .double(agreement)
            details[stageID] = .object(report)
        }
        let report = context.outputDirectory.appendingPathComponent("evaluation.json")
        try ArtifactStore.writeAtomically(Data(JSONValue.object(details).canonical.utf8), to: report)
        metrics["models"] = .object(details)
        metrics["machine"] = MachineRecord.current.json
        metrics.merge(StageResult.skippedImageMetrics(data)) { _, new in new }
        return StageResult(artifacts: ["report": "evaluation.json"], metrics: metrics)
    }
}
