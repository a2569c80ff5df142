import ArgumentParser
import Datasets
import Foundation
import Graph
import Pipeline
import Quantization
import Tensor
import Training

/// `qatflow bench-train`: training-step speed (forward + backward + optimizer step) on real Fashion-MNIST batches,
/// float or QAT, with an optional time split by layer type. A benchmark, not a stage: it writes nothing.
struct BenchTrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-train",
        abstract: "Time training steps (float, or QAT with --qat) of a BN-kept model on Fashion-MNIST batches.",
        discussion: """
            Takes --warmup untimed steps, then times --steps steps (each: forward in training mode, loss, backward, \
            gradient norm, optimizer step — the trainer's real step; the next batch is prepared ahead by a prefetch \
            thread, as in `qatflow train`, and is not part of the step time). --split also times every graph \
            node's forward and its backward steps and prints them grouped by layer type; the timer adds two clock \
            reads per node and per backward step.
            """)

    @Argument(help: "A float model with BatchNorm kept: ONNX, or a qatflow model file converted with --for-training.") var model: String
    @Option(help: "Images per step.") var batch = 128
    @Option(help: "Timed steps.") var steps = 10
    @Option(help: "Untimed steps first.") var warmup = 2
    @Option(help: "Worker threads.") var threads = 2
    @Flag(help: "Time QAT steps: the fake-quantized model `qatflow qat` trains (BN folded into the convolutions).") var qat = false
    @Option(help: "QAT: bits of weights and activations.") var bits = 8
    @Option(name: .customLong("init-images"), help: "QAT: calibration images for the initial activation ranges (max).") var initImages = 256
    @Option(help: "sgd (momentum 0.9) or adam; the same for float and QAT so their ratio is the model's cost.") var optimizer = "sgd"
    @Option(help: "Learning rate.") var lr = 0.01
    @OptionGroup var data: DatasetOptions
    @Flag(help: "Time split by layer type.") var split = false
    @Flag(name: .customLong("per-node"), help: "Also time every node and print the convolutions one by one, slowest first, with GFLOP/s.")
    var perNode = false
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        do {
            guard batch >= 1, steps >= 1, warmup >= 0, threads >= 1 else {
                throw StageFailure("--batch, --steps and --threads must be at least 1, --warmup at least 0")
            }
            let graph = try ModelLoader.load(URL(fileURLWithPath: model), forTraining: true)
            let dataset = self.data.dataset ?? "fashion-mnist:train"
            let data = try DatasetLoader.open(try self.data.spec(default: dataset).spec,
                                              projectDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            guard batch <= data.count else { throw StageFailure("--batch \(batch) is more than the \(data.count) images of \(dataset)") }
            let trainable: TrainableModel
            if qat {
                guard graph.nodes.contains(where: { $0.op == .batchNormalization }) else {
                    throw StageFailure("--qat: \(model) has no BatchNormalization left; convert it with --for-training")
                }
                let count = min(max(1, initImages), data.count)
                let first = try data.loadBatch(Array(0..<count))
                let calibration = try LabeledImages(count: first.count, channels: data.channels, height: data.height, width: data.width,
                                                    pixels: first.pixels, labels: first.labels, classNames: data.classNames)
                trainable = try QuantizationAwareModel(graph: graph, configuration: QATConfiguration(
                    weightBits: bits, activationBits: bits, initialization: .max), calibration: calibration).model
            } else {
                trainable = try TrainableModel(graph: graph)
            }
            let chosenOptimizer: Optimizer
            switch optimizer {
            case "sgd": chosenOptimizer = SGD(momentum: 0.9, weightDecay: 4e-5)
            case "adam": chosenOptimizer = Adam(weightDecay: 4e-5, weightDecayScope: .weightsOnly)
            default: throw StageFailure("--optimizer \(optimizer): expected sgd or adam")
            }
            let trainer = Trainer(model: trainable, optimizer: chosenOptimizer, schedule: ConstantSchedule(Float(lr)), threads: threads)
            // A benchmark must not stop on a loss bump; NaN/∞ still stop it.
            trainer.divergenceFactor = .infinity
            let batches = PrefetchingBatches(ShuffledBatches(data, batchSize: batch, seed: 0))
            for _ in 0..<warmup { try trainer.trainStep(batches.next()) }

            let timer = OperationTimer()
            if split || perNode { trainable.timer = timer }
            var samples: [Double] = []
            for _ in 0..<steps {
                let next = try batches.next()
                let start = DispatchTime.now().uptimeNanoseconds
                try trainer.trainStep(next)
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            trainable.timer = nil
            let mean = samples.reduce(0, +) / Double(samples.count)
            let median = samples.sorted()[samples.count / 2]
            let rows = split ? LayerTypeSplit(model: trainable, timer: timer, steps: steps).rows : []
            report(samples: samples, mean: mean, median: median, rows: rows)
            if perNode { try reportConvolutions(graph: trainable.sourceGraph, timer: timer) }
        } catch {
            throw fail(error)
        }
    }

    private func report(samples: [Double], mean: Double, median: Double, rows: [LayerTypeSplit.Row]) {
        let imagesPerSecond = Double(batch) * 1000 / mean
        let measured = rows.reduce(0) { $0 + $1.forwardMS + $1.backwardMS }
        let rest = max(0, mean - measured)
        if json {
            var object: [String: JSONValue] = [
                "mode": .string(qat ? "qat" : "float"), "batch": .int(batch), "threads": .int(threads), "steps": .int(steps),
                "mean_step_ms": .double(mean), "median_step_ms": .double(median), "images_per_second": .double(imagesPerSecond),
                "step_ms": .array(samples.map { .double($0) }),
            ]
            if qat { object["bits"] = .int(bits) }
            if split {
                object["split"] = .array(rows.map { .object(["type": .string($0.name), "forward_ms": .double($0.forwardMS),
                                                             "backward_ms": .double($0.backwardMS)]) })
                object["rest_ms"] = .double(rest)
            }
            printLine(JSONValue.object(object).canonical)
            return
        }
        printLine(String(format: "%@ (%@%@): batch %d, %d thread(s), %d steps after %d warm-up: mean %.1f ms/step, median %.1f ms/step, %.1f img/s",
                         model, qat ? "QAT W\(bits)A\(bits)" : "float", ", \(optimizer)", batch, threads, steps, warmup,
                         mean, median, imagesPerSecond))
        guard split else { return }
        func padded(_ text: String) -> String { text.padding(toLength: 48, withPad: " ", startingAt: 0) }
        printLine("  " + padded("layer type (ms per step)") + "   forward  backward     total   share")
        for row in rows + [LayerTypeSplit.Row(name: "rest: loss fwd, grad norm, optimizer", forwardMS: rest, backwardMS: 0)] {
            let total = row.forwardMS + row.backwardMS
            printLine("  " + padded(row.name) + String(format: " %9.1f %9.1f %9.1f %6.1f%%", row.forwardMS, row.backwardMS, total, 100 * total / mean))
        }
    }
}

extension BenchTrainCommand {
    /// One line per convolution: shape, wall ms per step forward and backward, and the GFLOP/s each reached
    /// (forward 2·MACs·batch; backward 4·MACs·batch for the input and weight gradients; the first convolution
    /// has no input gradient, so its backward rate reads low). Shows which GEMM shapes are far from the peak.
    private func reportConvolutions(graph: Graph, timer: OperationTimer) throws {
        let summary = try GraphSummary(graph: graph)
        var lines: [(total: Double, text: String)] = []
        for (index, node) in graph.nodes.enumerated() where node.op == .conv {
            let weights = graph.initializers[node.inputs[1]]?.shape ?? []
            let output = summary.rows[index].outputShape
            let forwardMS = Double(timer.forwardNanoseconds[index] ?? 0) / 1e6 / Double(steps)
            let backwardMS = Double(timer.backwardNanoseconds[index] ?? 0) / 1e6 / Double(steps)
            let flops = 2 * Double(summary.rows[index].multiplyAccumulates * batch)
            let rate = { (ms: Double, factor: Double) in ms > 0 ? String(format: "%6.1f", factor * flops / ms / 1e6) : "     -" }
            let shape = "w" + GraphSummary.formatShape(weights) + " out" + GraphSummary.formatShape(output)
            lines.append((forwardMS + backwardMS, "  " + shape.padding(toLength: 46, withPad: " ", startingAt: 0)
                + String(format: " %7.2f %7.2f", forwardMS, backwardMS) + "   " + rate(forwardMS, 1) + "  " + rate(backwardMS, 2)))
        }
        printLine("  convolution (ms per step, GFLOP/s)               forward backward   fwd GF  bwd GF")
        for line in lines.sorted(by: { $0.total > $1.total }) { printLine(line.text) }
    }
}

/// Forward and backward wall time per step grouped by layer type, from the graph nodes the timer's tags name.
struct LayerTypeSplit {
    struct Row {
        var name: String
        var forwardMS: Double
        var backwardMS: Double
    }

    let rows: [Row]

    init(model: TrainableModel, timer: OperationTimer, steps: Int) {
        var forward: [String: UInt64] = [:], backward: [String: UInt64] = [:]
        for (tag, nanoseconds) in timer.forwardNanoseconds { forward[Self.type(of: tag, in: model), default: 0] += nanoseconds }
        for (tag, nanoseconds) in timer.backwardNanoseconds { backward[Self.type(of: tag, in: model), default: 0] += nanoseconds }
        let perStep = { (nanoseconds: UInt64?) in Double(nanoseconds ?? 0) / 1e6 / Double(steps) }
        rows = Set(forward.keys).union(backward.keys)
            .map { Row(name: $0, forwardMS: perStep(forward[$0]), backwardMS: perStep(backward[$0])) }
            .sorted { $0.forwardMS + $0.backwardMS > $1.forwardMS + $1.backwardMS }
    }

    /// The layer type of a timer tag: convolutions by shape, BN (saying when it applies the next ReLU/Clip itself),
    /// activations, QAT's activation fake quantization, the loss, everything else.
    static func type(of tag: Int, in model: TrainableModel) -> String {
        switch tag {
        case OperationTimer.valueTransformTag: return "activation fake-quant (QAT)"
        case OperationTimer.untagged: return "loss (softmax cross-entropy) bwd"
        default: break
        }
        let graph = model.sourceGraph, node = graph.nodes[tag], layer = model.layers[tag]
        let folded = layer is FoldedConvBatchNorm ? " [QAT: + folded BN, weight FQ]" : layer is FakeQuantizedConvolution ? " [QAT: weight FQ]" : ""
        switch node.op {
        case .conv:
            let shape = node.inputs.count > 1 ? graph.initializers[node.inputs[1]]?.shape ?? [] : []
            let groups = node.int("group", default: 1)
            guard shape.count == 4 else { return "conv" + folded }
            if groups > 1 && groups == shape[0] && shape[1] == 1 { return "conv depthwise \(shape[2])×\(shape[3])" + folded }
            if shape[2] == 1 && shape[3] == 1 { return "conv 1×1" + folded }
            return "conv \(shape[2])×\(shape[3]) (full)" + folded
        case .batchNormalization:
            if let norm = layer as? BatchNorm2d { return norm.fusedClamp == nil ? "BN" : "BN + fused ReLU/ReLU6" }
            return "BN [QAT: folded into the conv, empty slot]"
        case .relu, .clip:
            return layer is FusedActivation ? "activation (fused into BN: pass-through)" : "activation (ReLU/ReLU6)"
        case .add: return "residual add"
        default: return "other (GAP, flatten, FC, dropout)"
        }
    }
}
