import Foundation
import Datasets
import Graph
import Quantization

/// `quantize`: post-training quantization of the upstream float model into a QDQ model
/// (docs/quantization.md), calibrating activation ranges on a seeded random subset of a dataset.
public enum QuantizeStage {
    public static let methods = ["max", "moving_average", "kl", "percentile", "mse"]

    public static let kind = StageKind(
        name: "quantize",
        summary: "post-training quantization (calibration) → QDQ model, bits 2–8 for weights and activations",
        parameters: [
            ParameterSpec("bits", .int, default: .int(8), help: "bits of weights and activations (2–8)"),
            ParameterSpec("weight_bits", .int, default: .null, help: "bits of weights; default: bits"),
            ParameterSpec("activation_bits", .int, default: .null, help: "bits of activations; default: bits"),
            ParameterSpec("method", .choice(methods), default: .string("mse"), help: "how activation ranges are chosen (see docs/quantization.md, Calibration methods)"),
            ParameterSpec("percentile", .double, default: .double(99.99), help: "for method percentile: the percentile kept at both ends"),
            ParameterSpec("momentum", .double, default: .double(0.99), help: "for method moving_average: weight of the old range per batch"),
            ParameterSpec("weight_method", .choice(["max_abs", "mse"]), default: .string("max_abs"), help: "how per-channel weight scales are chosen"),
            ParameterSpec("dataset", .dataset, default: .string("fashion-mnist:train"), help: "calibration images come from here"),
            ParameterSpec("images", .int, default: .int(1000), help: "calibration images (a seeded random subset)"),
            ParameterSpec("batch", .int, default: .int(100), help: "images per calibration forward pass"),
            ParameterSpec("seed", .int, default: .int(0), help: "chooses the calibration subset"),
            ParameterSpec("skip", .stringList, default: .array([]), help: "node names left in float"),
        ],
        inputs: .oneModel,
        run: run)

    public static func configuration(_ context: StageContext) throws -> QuantizationConfig {
        let bits = try context.int("bits")
        let method: ActivationCalibration
        switch try context.string("method") {
        case "max": method = .max
        case "moving_average": method = .movingAverage(momentum: try context.double("momentum"))
        case "percentile": method = .percentile(try context.double("percentile"))
        case "mse": method = .mse
        default: method = .kl
        }
        let config = QuantizationConfig(weightBits: context.optionalInt("weight_bits") ?? bits,
                                        activationBits: context.optionalInt("activation_bits") ?? bits,
                                        activationCalibration: method,
                                        weightCalibration: WeightCalibration(rawValue: try context.string("weight_method")) ?? .maxAbs,
                                        skip: try context.stringList("skip"))
        for (name, value) in [("weight_bits", config.weightBits), ("activation_bits", config.activationBits)] where !(2...8).contains(value) {
            throw StageFailure("stage '\(context.stageID)': \(name) must be between 2 and 8, got \(value)")
        }
        return config
    }

    static func run(_ context: StageContext) throws -> StageResult {
        let config = try configuration(context)
        let images = try context.int("images"), batch = try context.int("batch")
        guard images >= 1, batch >= 1 else { throw StageFailure("stage '\(context.stageID)': images and batch must be ≥ 1") }
        let source = try ModelLoader.load(try context.inputModel())
        let full = try DatasetLoader.load(try context.dataset("dataset"), projectDirectory: context.projectDirectory)
        let calibration = try CalibrationSubset.take(images, from: full, seed: UInt64(try context.int("seed")))
        var phase = ""
        let result = try PostTrainingQuantizer(config: config).quantize(source, calibration: calibration, batch: batch) { label, done, total in
            if label != phase { phase = label; context.progress.begin(label, total: total) }
            context.progress.advanceTo(done)
        }
        context.progress.finish()
        let output = context.outputDirectory.appendingPathComponent("model.safetensors")
        try ModelFile.write(result.graph, to: output)
        let size = (try FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
        let layers = try JSONDecoder().decode(JSONValue.self, from: JSONEncoder().encode(result.layers.map(SafeReport.init)))
        let worst = result.layers.filter { $0.sqnr.isFinite }.min { $0.sqnr < $1.sqnr }
        var metrics: [String: JSONValue] = [
            "quantized_nodes": .int(result.quantizedNodes),
            "float_nodes": .array(result.floatNodes.map(JSONValue.string)),
            "file_bytes": .int(size),
            "calibration_images": .int(calibration.count),
            "layers": layers,
        ]
        if let worst { metrics["min_sqnr_db"] = .double(worst.sqnr) }
        return StageResult(artifacts: ["model": "model.safetensors"], metrics: metrics)
    }
}

/// JSON cannot hold NaN/∞: the report stores them as null.
private struct SafeReport: Encodable {
    let report: LayerQuantizationReport
    init(_ report: LayerQuantizationReport) { self.report = report }
    enum Keys: String, CodingKey { case tensor, scale, zero_point, low, high, clipping_ratio, sqnr_db, cosine }
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(report.tensor, forKey: .tensor)
        try container.encode(report.scale, forKey: .scale)
        try container.encode(report.zeroPoint, forKey: .zero_point)
        try container.encode(report.low, forKey: .low)
        try container.encode(report.high, forKey: .high)
        try container.encode(report.clippingRatio, forKey: .clipping_ratio)
        try container.encode(report.sqnr.isFinite ? report.sqnr : nil, forKey: .sqnr_db)
        try container.encode(report.cosine.isFinite ? report.cosine : nil, forKey: .cosine)
    }
}

/// A seeded random subset of a dataset (calibration should not depend on the dataset's order).
enum CalibrationSubset {
    static func take(_ count: Int, from data: LabeledImages, seed: UInt64) throws -> LabeledImages {
        guard count < data.count else { return data }
        var generator = SplitMix64(seed: seed)
        var indices = Array(0..<data.count)
        for i in 0..<count {
            let j = i + Int(generator.next() % UInt64(data.count - i))
            indices.swapAt(i, j)
        }
        let chosen = Array(indices.prefix(count))
        let (pixels, labels) = data.batch(chosen)
        return try LabeledImages(count: count, channels: data.channels, height: data.height, width: data.width,
                                 pixels: pixels, labels: labels, classNames: data.classNames)
    }
}

/// A small, fast, seedable generator (Vigna's SplitMix64): same seed, same subset, on every machine.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
