import XCTest
import Datasets
import Graph
import Inference
import ONNX
import Quantization
import Tensor

final class GridTests: XCTestCase {
    func testActivationGridContainsZeroExactly() {
        for (low, high) in [(Float(-1.3), Float(2.7)), (0.5, 3), (-4, -1), (0, 6)] {
            for bits in 2...8 {
                let grid = AffineQuantization.activation(low: low, high: high, bits: bits)
                XCTAssertEqual(grid.qmin, 0)
                XCTAssertEqual(grid.qmax, (1 << bits) - 1)
                XCTAssertEqual(grid.fakeQuantize(0), 0, "zero must be representable (\(low)...\(high), \(bits) bits)")
                XCTAssertLessThanOrEqual(grid.representableRange.lowerBound, min(low, 0) + grid.scale)
                XCTAssertGreaterThanOrEqual(grid.representableRange.upperBound, max(high, 0) - grid.scale)
            }
        }
    }

    func testWeightGridIsSymmetricNarrowRange() {
        for bits in 2...8 {
            let grid = AffineQuantization.weight(maxAbs: 0.5, bits: bits)
            let qmax = (1 << (bits - 1)) - 1
            XCTAssertEqual(grid.qmin, -qmax)
            XCTAssertEqual(grid.quantize(0.5), qmax)
            XCTAssertEqual(grid.quantize(-10), -qmax, "saturates to the narrow range")
            XCTAssertEqual(grid.zeroPoint, 0)
        }
    }

    func testQuantizeRoundsHalfToEven() {
        let grid = AffineQuantization(scale: 1, zeroPoint: 0, qmin: -127, qmax: 127)
        XCTAssertEqual(grid.quantize(2.5), 2)
        XCTAssertEqual(grid.quantize(3.5), 4)
        XCTAssertEqual(grid.quantize(-2.5), -2)
    }
}

/// A small float CNN built by hand: conv → relu → conv(depthwise) → relu → add(residual) → GAP → flatten → gemm.
func smallNetwork(seed: UInt64 = 1) -> Graph {
    var generator = SeededGenerator(seed: seed)
    func random(_ count: Int, scale: Float) -> [Float] { (0..<count).map { _ in Float.random(in: -scale...scale, using: &generator) } }
    let initializers: [Initializer] = [
        Initializer(name: "w1", shape: [8, 1, 3, 3], storage: .float32(random(72, scale: 0.5))),
        Initializer(name: "b1", shape: [8], storage: .float32(random(8, scale: 0.1))),
        Initializer(name: "w2", shape: [8, 1, 3, 3], storage: .float32(random(72, scale: 0.5))),
        Initializer(name: "b2", shape: [8], storage: .float32(random(8, scale: 0.1))),
        Initializer(name: "fc", shape: [10, 8], storage: .float32(random(80, scale: 0.5))),
        Initializer(name: "fcb", shape: [10], storage: .float32(random(10, scale: 0.1))),
    ]
    let nodes = [
        Node(name: "conv1", op: .conv, inputs: ["x", "w1", "b1"], outputs: ["c1"], attributes: ["pads": .ints([1, 1, 1, 1]), "kernel_shape": .ints([3, 3])]),
        Node(name: "relu1", op: .relu, inputs: ["c1"], outputs: ["r1"]),
        Node(name: "dw", op: .conv, inputs: ["r1", "w2", "b2"], outputs: ["c2"], attributes: ["pads": .ints([1, 1, 1, 1]), "group": .int(8), "kernel_shape": .ints([3, 3])]),
        Node(name: "clip", op: .clip, inputs: ["c2"], outputs: ["r2"], attributes: ["min": .float(0), "max": .float(6)]),
        Node(name: "add", op: .add, inputs: ["r1", "r2"], outputs: ["a"]),
        Node(name: "gap", op: .globalAveragePool, inputs: ["a"], outputs: ["g"]),
        Node(name: "flatten", op: .flatten, inputs: ["g"], outputs: ["f"], attributes: ["axis": .int(1)]),
        Node(name: "fc", op: .gemm, inputs: ["f", "fc", "fcb"], outputs: ["logits"], attributes: ["transB": .int(1)]),
    ]
    return Graph(name: "small", inputs: [ValueInfo(name: "x", shape: [-1, 1, 12, 12])], outputs: [ValueInfo(name: "logits", shape: [-1, 10])],
                 nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
}

struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomImages(_ count: Int, side: Int, seed: UInt64) throws -> LabeledImages {
    var generator = SeededGenerator(seed: seed)
    let pixels = (0..<count * side * side).map { _ in Float.random(in: -1...2, using: &generator) }
    return try LabeledImages(count: count, channels: 1, height: side, width: side, pixels: pixels,
                             labels: (0..<count).map { $0 % 10 }, classNames: (0..<10).map(String.init))
}

final class PostTrainingQuantizerTests: XCTestCase {
    func testQDQGraphStructureAndFidelity() throws {
        let graph = smallNetwork()
        let data = try randomImages(64, side: 12, seed: 2)
        for method in [ActivationCalibration.max, .movingAverage(momentum: 0.9), .kl, .percentile(99.9), .mse] {
            let result = try PostTrainingQuantizer(config: QuantizationConfig(activationCalibration: method)).quantize(graph, calibration: data, batch: 16)
            let q = result.graph
            XCTAssertEqual(result.quantizedNodes, 5, "conv1, dw, add, gap and fc: \(method)")
            // Weights are int8 within the narrow range, biases int32; no float weight remains.
            for name in ["w1", "w2", "fc", "b1", "b2", "fcb"] { XCTAssertNil(q.initializers[name], name) }
            guard case .int8(let w1)? = q.initializers["w1::q"]?.storage else { return XCTFail("w1 not int8") }
            XCTAssertTrue(w1.allSatisfy { $0 >= -127 })
            guard case .int32? = q.initializers["b1::q"]?.storage else { return XCTFail("b1 not int32") }
            // The fused ReLU output is the quantization point, not the conv output.
            XCTAssertTrue(q.nodes.contains { $0.op == .quantizeLinear && $0.inputs[0] == "r1::float" })
            XCTAssertFalse(q.nodes.contains { $0.op == .quantizeLinear && $0.inputs[0].hasPrefix("c1") })
            XCTAssertEqual(q.outputs.map(\.name), ["logits"])

            let sample = Tensor(shape: [16, 1, 12, 12], data: data.batch(0..<16).pixels)
            let reference = try FloatExecutor(graph: graph).run(["x": sample])["logits"]!
            let simulated = try FloatExecutor(graph: q).run(["x": sample])["logits"]!
            let cosine = Self.cosine(reference.data, simulated.data)
            XCTAssertGreaterThan(cosine, 0.99, "\(method)")
            XCTAssertTrue(result.layers.allSatisfy { $0.cosine > 0.98 }, "\(result.layers.map { ($0.tensor, $0.cosine) })")
        }
    }

    func testSkippedNodesStayFloatAndUnknownSkipIsAnError() throws {
        let data = try randomImages(16, side: 12, seed: 3)
        let result = try PostTrainingQuantizer(config: QuantizationConfig(skip: ["fc"])).quantize(smallNetwork(), calibration: data, batch: 16)
        XCTAssertEqual(result.floatNodes, ["fc"])
        XCTAssertNotNil(result.graph.initializers["fc"], "a skipped Gemm keeps its float weight")
        XCTAssertThrowsError(try PostTrainingQuantizer(config: QuantizationConfig(skip: ["nope"])).quantize(smallNetwork(), calibration: data, batch: 16)) { error in
            XCTAssertTrue("\(error)".contains("'nope'"))
        }
    }

    /// A depthwise channel whose weights decayed into denormals (what Adam's weight decay does to a dead channel
    /// over a few thousand QAT steps) with a real bias: max-abs would give it a weight scale near 1e-41, on which
    /// the bias does not fit in int32. The export widens that channel's scale instead of crashing, and the int8
    /// engine still outputs the bias. NaN weights are refused with the node's name.
    func testNearlyZeroWeightChannelKeepsItsBias() throws {
        var graph = smallNetwork()
        guard case .float32(var w2) = graph.initializers["w2"]!.storage, case .float32(var b2) = graph.initializers["b2"]!.storage else { return XCTFail() }
        for i in 27..<36 { w2[i] = 1e-40 }   // channel 3
        b2[3] = 0.8
        graph.initializers["w2"] = Initializer(name: "w2", shape: [8, 1, 3, 3], storage: .float32(w2))
        graph.initializers["b2"] = Initializer(name: "b2", shape: [8], storage: .float32(b2))
        let data = try randomImages(32, side: 12, seed: 5)
        for bits in [8, 4] {
            let result = try PostTrainingQuantizer(config: QuantizationConfig(weightBits: bits, activationBits: bits)).quantize(graph, calibration: data, batch: 16)
            guard case .int32(let bias)? = result.graph.initializers["b2::q"]?.storage,
                  case .float32(let biasScales)? = result.graph.initializers["b2::q.scale"]?.storage else { return XCTFail("b2 not int32") }
            XCTAssertLessThanOrEqual(abs(Int(bias[3])), 1 << 30, "bits \(bits)")
            XCTAssertEqual(Float(bias[3]) * biasScales[3], 0.8, accuracy: 1e-6, "bits \(bits): the bias survives")

            // Channel 3 of the depthwise output is the constant 0.8 in float; the int8 engine's r2 must agree
            // within one step of its grid.
            var exposed = result.graph
            exposed.outputs.append(ValueInfo(name: "r2", shape: [-1, 8, 12, 12]))
            let sample = Tensor(shape: [4, 1, 12, 12], data: data.batch(0..<4).pixels)
            let r2 = try Int8Executor(graph: exposed).run(["x": sample])["r2"]!
            let step = try XCTUnwrap(result.layers.first { $0.tensor == "r2" }).scale
            for image in 0..<4 {
                for pixel in 0..<144 { XCTAssertEqual(r2.data[(image * 8 + 3) * 144 + pixel], 0.8, accuracy: step, "bits \(bits)") }
            }
        }
        w2[30] = .nan
        graph.initializers["w2"] = Initializer(name: "w2", shape: [8, 1, 3, 3], storage: .float32(w2))
        XCTAssertThrowsError(try PostTrainingQuantizer(config: QuantizationConfig()).quantize(graph, calibration: data, batch: 16)) { error in
            XCTAssertTrue("\(error)".contains("'dw'") && "\(error)".contains("'w2'") && "\(error)".contains("NaN"), "\(error)")
        }
    }

    func testLowBitsNarrowEveryRange() throws {
        let data = try randomImages(32, side: 12, seed: 4)
        let result = try PostTrainingQuantizer(config: QuantizationConfig(weightBits: 4, activationBits: 3)).quantize(smallNetwork(), calibration: data, batch: 16)
        guard case .int8(let w)? = result.graph.initializers["w2::q"]?.storage else { return XCTFail() }
        XCTAssertTrue(w.allSatisfy { abs($0) <= 7 })
        let sample = Tensor(shape: [8, 1, 12, 12], data: data.batch(0..<8).pixels)
        let exposed = try FloatExecutor(graph: {
            var g = result.graph
            g.outputs.append(ValueInfo(name: "r1::q", dataType: .uint8, shape: [-1, 8, 12, 12]))
            return g
        }()).run(["x": sample])
        XCTAssertTrue(exposed["r1::q"]!.data.allSatisfy { $0 >= 0 && $0 <= 7 }, "3-bit activations stay in [0, 7]")
        XCTAssertThrowsError(try PostTrainingQuantizer(config: QuantizationConfig(weightBits: 9)).quantize(smallNetwork(), calibration: data, batch: 16))
    }

    func testRealMobileNetV2KeepsAccuracyAt8Bits() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let graph = try ONNXImporter.importModel(at: repository.appendingPathComponent("models/mobilenetv2-fmnist-pytorch.onnx"), forTraining: true)
        let calibration = try DatasetLoader.load(try DatasetSpec(name: "fashion-mnist", split: .train, limit: 200), projectDirectory: repository)
        let test = try DatasetLoader.load(try DatasetSpec(name: "fashion-mnist", split: .test, limit: 500), projectDirectory: repository)
        let result = try PostTrainingQuantizer(config: QuantizationConfig()).quantize(graph, calibration: calibration, batch: 100)
        XCTAssertEqual(result.floatNodes, [])
        func accuracy(_ graph: Graph) throws -> Double {
            let executor = try FloatExecutor(graph: graph)
            var correct = 0
            for start in stride(from: 0, to: test.count, by: 100) {
                let (pixels, labels) = test.batch(start..<start + 100)
                let logits = try executor.run(["input": Tensor(shape: [100, 1, 32, 32], data: pixels)])["logits"]!.data
                for row in 0..<100 {
                    let scores = logits[row * 10..<(row + 1) * 10]
                    if scores.firstIndex(of: scores.max()!)! - row * 10 == labels[row] { correct += 1 }
                }
            }
            return Double(correct) / Double(test.count) * 100
        }
        let float = try accuracy(graph), quantized = try accuracy(result.graph)
        print("MobileNetV2-FMNIST, 500 test images: float \(float) %, W8A8 MSE simulated \(quantized) %")
        XCTAssertGreaterThanOrEqual(quantized, float - 1.0)
    }

    static func cosine(_ a: [Float], _ b: [Float]) -> Double {
        var dot = 0.0, aa = 0.0, bb = 0.0
        for i in a.indices { dot += Double(a[i] * b[i]); aa += Double(a[i] * a[i]); bb += Double(b[i] * b[i]) }
        return dot / (aa.squareRoot() * bb.squareRoot())
    }
}
