import ArgumentParser
import Datasets
import Foundation
import Graph
import Inference
import Kernels
import Pipeline
import Tensor

struct ConvertCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "convert", abstract: "Convert an ONNX model to a qatflow model file.")

    @Argument(help: "The ONNX model.") var model: String
    @Option(name: .shortAndLong, help: "Where to write the qatflow model file.") var output: String
    @Flag(name: .customLong("for-training"), help: "Keep BatchNormalization and Dropout trainable (do not fold BN).") var forTraining = false

    func run() throws {
        do {
            let result = try DirectRun(kind: ConvertStage.kind).run(
                parameters: ["model": .string(model), "for_training": .bool(forTraining)],
                destinations: ["model": URL(fileURLWithPath: output)])
            printLine("wrote \(output): \(MetricsFormatter.inline(result.metrics))")
        } catch {
            throw fail(error)
        }
    }
}

struct InspectCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "inspect", abstract: "Print a model's layers, shapes, parameters, MACs and file size.")

    @Argument(help: "A qatflow model file or an ONNX model.") var model: String

    func run() throws {
        do {
            let url = URL(fileURLWithPath: model)
            let graph = try ModelLoader.load(url, forTraining: true)
            let size = (try FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int)
            printLine(try GraphSummary(graph: graph, fileSize: size).text)
            if let recorded = ImagePreprocessing(json: graph.metadata[ImagePreprocessing.metadataKey]) {
                printLine("preprocessing (recorded by quantize/qat/train; eval and infer --image apply it): \(recorded.summary)")
            }
        } catch {
            throw fail(error)
        }
    }
}

struct InferCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "infer", abstract: "Run a float model on an NPY input (float32, NCHW) or on an image file, and write the output as NPY.")

    @Argument(help: "A qatflow model file or an ONNX model.") var model: String
    @Option(help: "Input array (.npy, float32, already preprocessed).") var input: String?
    @Option(help: "A PNG or JPEG image, preprocessed as recorded in the model file (by quantize, qat or train).") var image: String?
    @Option(help: "Where to write the first output (.npy).") var output: String

    func run() throws {
        do {
            let graph = try ModelLoader.load(URL(fileURLWithPath: model))
            guard let inputInfo = graph.inputs.first, graph.inputs.count == 1 else {
                throw StageFailure("\(model) has \(graph.inputs.count) inputs; infer takes models with one input")
            }
            guard (input == nil) != (image == nil) else { throw StageFailure("give --input ARRAY.npy or --image FILE (one of them)") }
            let array: (shape: [Int], values: [Float])
            if let image {
                guard let recorded = ImagePreprocessing(json: graph.metadata[ImagePreprocessing.metadataKey]) else {
                    throw StageFailure("\(model) records no preprocessing (only models written by quantize, qat or train do); preprocess \(image) yourself and pass --input ARRAY.npy")
                }
                array = try DatasetLoader.preprocessImageFile(URL(fileURLWithPath: image), with: recorded)
            } else {
                array = try NPYArray.read(URL(fileURLWithPath: input!))
            }
            let source = image ?? input!
            let fits = array.shape.count == inputInfo.shape.count && zip(array.shape, inputInfo.shape).allSatisfy { $1 == -1 || $0 == $1 }
            guard fits else {
                throw StageFailure("\(source): shape \(array.shape) does not fit model input '\(inputInfo.name)' of shape \(inputInfo.shape.map { $0 < 0 ? "N" : String($0) })")
            }
            let outputs = try FloatExecutor(graph: graph).run([inputInfo.name: Tensor(shape: array.shape, data: array.values)])
            guard let name = graph.outputs.first?.name, let result = outputs[name] else { throw StageFailure("model produced no output") }
            try NPYArray.write(shape: result.shape, values: result.data, to: URL(fileURLWithPath: output))
            printLine("wrote \(output): \(name) \(result.shape)")
        } catch {
            throw fail(error)
        }
    }
}

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "eval", abstract: "Top-1/top-5 accuracy of a model on a dataset.")

    @Argument(help: "A qatflow model file or an ONNX model.") var model: String
    @OptionGroup var data: DatasetOptions
    @Option(help: "Evaluate only the first N images.") var images: Int?
    @Option(help: "Images per forward pass.") var batch = 100
    @Flag(help: "Print one JSON object (top1, top5, images, per_class, confusion).") var json = false
    @Flag(help: "No progress line.") var quiet = false
    @Option(help: "int8 or float; default: int8 for quantized (QDQ) models, float otherwise. float on a quantized model is its simulation.") var engine: String?
    @Option(help: "Also write the predicted class of every image to this file, one per line in dataset order (to compare with another runtime).") var predictions: String?

    func run() throws {
        do {
            var spec = try data.spec(default: "fashion-mnist:test").spec
            let dataset = data.dataset ?? "fashion-mnist:test"
            if let images { spec.limit = images }
            let graph = try ModelLoader.load(URL(fileURLWithPath: model))
            // Image files get the preprocessing the model was calibrated or trained with, unless flags say otherwise.
            if spec.isImageSource, !data.declaresPreprocessing, let recorded = ImagePreprocessing(json: graph.metadata[ImagePreprocessing.metadataKey]) {
                spec = try spec.adopting(recorded)
                if !json { printError("preprocessing recorded in \(model): \(recorded.summary)") }
            }
            let loaded = try DatasetLoader.open(spec, projectDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
            let chosen = try chooseEngine(engine, for: graph, model: model)
            guard loaded.isLabeled else {
                throw StageFailure("--dataset \(dataset): a folder of images without class subfolders has no labels to evaluate against; use class subfolders or an image list")
            }
            var predicted: [Int] = []
            let metrics = try Evaluator.evaluate(graph, on: loaded, batch: max(1, batch), engine: chosen,
                                                 progress: ProgressReporter(prefix: "eval", quiet: quiet || json), label: model,
                                                 onPrediction: predictions == nil ? nil : { predicted.append($0) })
            if let predictions {
                try ArtifactStore.writeAtomically(Data(predicted.map { "\($0)\n" }.joined().utf8), to: URL(fileURLWithPath: predictions))
            }
            if json {
                printLine(metrics.json.canonical)
            } else {
                printLine(String(format: "%@ on %@ (%@ engine): top-1 %.2f %%, top-5 %.2f %% (%d images)", model, dataset, chosen.rawValue, metrics.top1, metrics.top5, metrics.images))
            }
        } catch {
            throw fail(error)
        }
    }
}

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Time a model's forward pass on random input (median and minimum over repeats).")

    @Argument(help: "A qatflow model file or an ONNX model.") var model: String
    @Option(help: "Images per forward pass.") var batch = 1
    @Option(help: "Threads.") var threads = 1
    @Option(help: "Timed forward passes (after 5 warm-up passes).") var repeats = 100
    @Flag(help: "Print one JSON object.") var json = false
    @Option(help: "int8 or float; default: int8 for quantized (QDQ) models, float otherwise.") var engine: String?

    func run() throws {
        do {
            let graph = try ModelLoader.load(URL(fileURLWithPath: model))
            let chosen = try chooseEngine(engine, for: graph, model: model)
            guard let input = graph.inputs.first else { throw StageFailure("\(model) has no input") }
            let shape = [batch] + input.shape.dropFirst().map { $0 < 0 ? 1 : $0 }
            var generator = SystemRandomNumberGenerator()
            let tensor = Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in Float.random(in: -1...1, using: &generator) })
            let run: ([String: Tensor]) throws -> [String: Tensor]
            if chosen == .int8 {
                let executor = try Int8Executor(graph: graph, threads: max(1, threads))
                run = { try executor.run($0) }
            } else {
                let executor = try FloatExecutor(graph: graph, threads: max(1, threads))
                run = { try executor.run($0) }
            }
            for _ in 0..<5 { _ = try run([input.name: tensor]) }
            var samples: [Double] = []
            for _ in 0..<max(1, repeats) {
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try run([input.name: tensor])
                samples.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6)
            }
            samples.sort()
            let median = samples[samples.count / 2], minimum = samples[0]
            if json {
                printLine(JSONValue.object(["median_ms": .double(median), "min_ms": .double(minimum), "batch": .int(batch), "threads": .int(threads), "engine": .string(chosen.rawValue),
                                            "cpu": .string(MachineDescription.cpuModel), "isa": .string(isaPath(of: chosen))]).canonical)
            } else {
                printLine(String(format: "%@ (%@ engine, %@ on %@): batch %d, %d thread(s): median %.3f ms, min %.3f ms, %.0f img/s", model, chosen.rawValue,
                                 isaPath(of: chosen), MachineDescription.cpuModel, batch, threads, median, minimum, Double(batch) * 1000 / median))
            }
        } catch {
            throw fail(error)
        }
    }
}

struct QuantizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "quantize", abstract: "Post-training quantization: calibrate activation ranges and write a QDQ model.")

    @Argument(help: "A float model: ONNX or a qatflow model file.") var model: String
    @Option(name: .shortAndLong, help: "Where to write the quantized model.") var output: String
    @OptionGroup var data: DatasetOptions
    @Option(help: "Calibration images (a seeded random subset).") var images = 1000
    @Option(help: "Bits of weights and activations (2–8).") var bits = 8
    @Option(name: .customLong("weight-bits"), help: "Bits of weights (default: --bits).") var weightBits: Int?
    @Option(name: .customLong("activation-bits"), help: "Bits of activations (default: --bits).") var activationBits: Int?
    @Option(help: "Where the model will run: qatflow, or onnxruntime-x86 (7-bit weights where activations have 8 bits, so ONNX Runtime computes the QDQ export exactly on x86 CPUs without VNNI).") var target = "qatflow"
    @Option(help: "Activation range method: \(QuantizeStage.methods.joined(separator: ", ")).") var method = "mse"
    @Option(name: .customLong("weight-method"), help: "max_abs or mse.") var weightMethod = "max_abs"
    @Option(help: "Percentile for --method percentile.") var percentile = 99.99
    @Option(help: "Node names left in float. Repeatable.") var skip: [String] = []
    @Option(help: "Images per calibration pass.") var batch = 100
    @Option(help: "Chooses the calibration subset, the bias-correction subset and the BN re-estimation images.") var seed = 0
    @Flag(name: .customLong("bias-correction"), help: "Correct each quantized layer's bias by the mean error of its quantized output.") var biasCorrection = false
    @Option(name: .customLong("bias-correction-images"), help: "Images bias correction measures on (a subset of the calibration images).") var biasCorrectionImages = 256
    @Option(name: .customLong("bn-reestimate-images"), help: "Training images (from --dataset) that re-estimate BatchNorm statistics on the fake-quantized model before BN is folded; 0: off. Needs BN kept: an ONNX model, or a model converted with --for-training.") var bnReestimateImages = 0
    @Flag(help: "No progress line.") var quiet = false

    func run() throws {
        do {
            // A plain command has no upstream stage: the model file is handed to the stage as its input.
            let (dataset, datasets) = try data.stageDataset(default: "fashion-mnist:train")
            var parameters: [String: JSONValue] = [
                "dataset": .string(dataset), "images": .int(images), "bits": .int(bits), "method": .string(method),
                "weight_method": .string(weightMethod), "percentile": .double(percentile),
                "skip": .array(skip.map(JSONValue.string)), "batch": .int(batch), "seed": .int(seed),
                "bias_correction": .bool(biasCorrection), "bias_correction_images": .int(biasCorrectionImages),
                "bn_reestimate_images": .int(bnReestimateImages), "target": .string(target),
            ]
            if let weightBits { parameters["weight_bits"] = .int(weightBits) }
            if let activationBits { parameters["activation_bits"] = .int(activationBits) }
            let result = try DirectRun(kind: QuantizeStage.kind, quiet: quiet).run(
                parameters: parameters, inputModels: [URL(fileURLWithPath: model)],
                destinations: ["model": URL(fileURLWithPath: output)], datasets: datasets)
            var summary = result.metrics
            summary["layers"] = nil
            summary["bias_correction"] = nil
            printLine("wrote \(output): \(MetricsFormatter.inline(summary))")
        } catch {
            throw fail(error)
        }
    }
}

/// The kernel path an engine's convolutions take on this CPU: the int8 engine's u8×s8 kernels, or the float engine's FP32 kernels.
func isaPath(of engine: EvaluationEngine) -> String {
    engine == .int8 ? "int8 \(KernelISA.best)" : "fp32 \(FP32InstructionSet.preferred)"
}

/// `--engine`: int8 needs a quantized (QDQ) model; the default follows the model.
func chooseEngine(_ requested: String?, for graph: Graph, model: String) throws -> EvaluationEngine {
    guard let requested else { return Evaluator.isQuantized(graph) ? .int8 : .float }
    guard let engine = EvaluationEngine(rawValue: requested) else {
        throw StageFailure("--engine \(requested): expected int8 or float")
    }
    if engine == .int8 && !Evaluator.isQuantized(graph) {
        throw StageFailure("--engine int8: \(model) is a float model; quantize it first (qatflow quantize)")
    }
    return engine
}
