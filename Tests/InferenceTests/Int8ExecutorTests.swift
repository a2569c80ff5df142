import Datasets
import Foundation
import Graph
import Inference
import ONNX
import Quantization
import Tensor
import XCTest

/// The int8 engine against the float executor simulating the same QDQ graph (docs/quantization.md: one file, two
/// engines). They differ only in requantization rounding, so logits should agree to within one output step.
final class Int8ExecutorTests: XCTestCase {
    func testSmallNetworkAgreesWithSimulationAtEveryBitWidth() throws {
        let calibration = try Self.randomImages(64, side: 12, seed: 11)
        for (weightBits, activationBits) in [(8, 8), (6, 6), (4, 4), (4, 8)] {
            let config = QuantizationConfig(weightBits: weightBits, activationBits: activationBits)
            let quantized = try PostTrainingQuantizer(config: config).quantize(Self.smallNetwork(), calibration: calibration, batch: 16).graph
            let executor = try Int8Executor(graph: quantized)
            XCTAssertEqual(executor.floatFallbackNodes, [], "W\(weightBits)A\(activationBits)")
            XCTAssertEqual(executor.kernelStepCount, 5, "conv1, dw, add, gap, fc (flatten is free)")
            for batch in [1, 16] {
                let input = randomTensor([batch, 1, 12, 12], seed: UInt64(100 + batch), range: -1...2)
                let agreement = try Self.compare(quantized, executor: executor, input: input)
                XCTAssertGreaterThanOrEqual(agreement, 0.99, "W\(weightBits)A\(activationBits) batch \(batch)")
                let again = try executor.run(["x": input])["logits"]!
                XCTAssertEqual(again, try executor.run(["x": input])["logits"]!, "reused buffers give the same result")
            }
        }
    }

    func testSkippedLayerRunsInFloatBetweenDequantizeAndQuantize() throws {
        let calibration = try Self.randomImages(32, side: 12, seed: 12)
        for skip in [["dw"]] {
            let quantized = try PostTrainingQuantizer(config: QuantizationConfig(skip: skip))
                .quantize(Self.smallNetwork(), calibration: calibration, batch: 16).graph
            let executor = try Int8Executor(graph: quantized)
            XCTAssertEqual(executor.floatFallbackNodes.first, skip[0], "\(executor.floatFallbackNodes)")
            let input = randomTensor([4, 1, 12, 12], seed: 13, range: -1...2)
            XCTAssertGreaterThanOrEqual(try Self.compare(quantized, executor: executor, input: input), 0.99, "skip \(skip)")
        }
    }

    /// A float classifier: its input is dequantized once, its logits come straight from the float executor.
    func testSkippedClassifierGivesFloatLogits() throws {
        let calibration = try Self.randomImages(32, side: 12, seed: 12)
        let quantized = try PostTrainingQuantizer(config: QuantizationConfig(skip: ["fc"]))
            .quantize(Self.smallNetwork(), calibration: calibration, batch: 16).graph
        let executor = try Int8Executor(graph: quantized)
        XCTAssertEqual(executor.floatFallbackNodes, ["flatten", "fc"], "the Flatten feeding a float node runs in float too")
        let input = randomTensor([4, 1, 12, 12], seed: 13, range: -1...2)
        let simulated = try FloatExecutor(graph: quantized).run(["x": input])["logits"]!
        let int8 = try executor.run(["x": input])["logits"]!
        XCTAssertEqual(int8.shape, simulated.shape)
        // The classifier's input codes may differ by one step of the GAP output, so the logits differ by a little.
        let largest = simulated.data.map(abs).max()!
        XCTAssertLessThanOrEqual(int8.maxAbsoluteDifference(simulated), 0.05 * largest)
    }

    /// Strided stem (im2col), strided depthwise, 1×1 GEMM, MaxPool (float fallback), and a Flatten of an NHWC
    /// image (a reorder to NCHW order) before the classifier.
    func testStridedNetworkWithSpatialFlattenAndMaxPool() throws {
        let graph = Self.stridedNetwork()
        let calibration = try Self.randomImages(32, side: 16, seed: 14)
        let quantized = try PostTrainingQuantizer(config: QuantizationConfig()).quantize(graph, calibration: calibration, batch: 16).graph
        let executor = try Int8Executor(graph: quantized)
        XCTAssertEqual(executor.floatFallbackNodes, ["pool"])
        for batch in [1, 3] {
            let input = randomTensor([batch, 1, 16, 16], seed: UInt64(15 + batch), range: -1...2)
            XCTAssertGreaterThanOrEqual(try Self.compare(quantized, executor: executor, input: input), 0.99, "batch \(batch)")
        }
    }

    /// A batch larger than a chunk runs as chunks, whole chunks per thread; the result must be bit-identical to
    /// one pass over the whole batch (chunks joined in order, each thread on its own buffers).
    func testLargeBatchInChunksOnTwoThreadsEqualsOneWholePass() throws {
        for graph in [Self.smallNetwork(), Self.stridedNetwork()] {
            let side = graph.inputs[0].shape[2]
            let quantized = try PostTrainingQuantizer(config: QuantizationConfig())
                .quantize(graph, calibration: try Self.randomImages(32, side: side, seed: 17), batch: 16).graph
            let whole = try Int8Executor(graph: quantized, threads: 1, batchChunk: 0)
            let chunked = try Int8Executor(graph: quantized, threads: 2, batchChunk: 4)
            XCTAssertEqual(chunked.batchChunk, 4, "\(graph.name) treats images independently")
            let input = randomTensor([11, 1, side, side], seed: 18, range: -1...2)  // chunks of 4, 4, 3
            let expected = try whole.run(["x": input])
            for _ in 0..<2 {
                let output = try chunked.run(["x": input])
                XCTAssertEqual(output.keys.sorted(), expected.keys.sorted())
                for (name, tensor) in expected { XCTAssertEqual(output[name], tensor, "\(graph.name) output \(name)") }
            }
        }
    }

    func testFloatModelAndBadInputsAreRejectedWithClearErrors() throws {
        XCTAssertThrowsError(try Int8Executor(graph: Self.smallNetwork())) { error in
            XCTAssertTrue("\(error)".contains("FloatExecutor"), "\(error)")
        }
        let calibration = try Self.randomImages(16, side: 12, seed: 16)
        let quantized = try PostTrainingQuantizer(config: QuantizationConfig()).quantize(Self.smallNetwork(), calibration: calibration, batch: 16).graph
        let executor = try Int8Executor(graph: quantized)
        XCTAssertThrowsError(try executor.run(["x": Tensor(zeros: [1, 1, 11, 12])])) { error in
            XCTAssertTrue("\(error)".contains("'x'"), "\(error)")
        }
        XCTAssertThrowsError(try executor.run([:]))
    }

    // MARK: - Helpers

    /// Fraction of outputs of the int8 engine within one output quantization step of the simulation.
    static func compare(_ quantized: Graph, executor: Int8Executor, input: Tensor) throws -> Double {
        let output = quantized.outputs[0].name
        let simulated = try FloatExecutor(graph: quantized).run(["x": input])[output]!
        let int8 = try executor.run(["x": input])[output]!
        XCTAssertEqual(int8.shape, simulated.shape)
        // A float output (logits are no quantization point): the step an 8-bit grid over its range would have.
        let step = (try? outputStep(of: quantized, output: output)) ?? (simulated.data.max()! - simulated.data.min()!) / 255
        let close = zip(int8.data, simulated.data).filter { abs($0 - $1) <= step * 1.001 }.count
        return Double(close) / Double(max(1, int8.count))
    }

    /// The scale of the DequantizeLinear producing `output`.
    static func outputStep(of graph: Graph, output: String) throws -> Float {
        guard let node = graph.nodes.first(where: { $0.op == .dequantizeLinear && $0.outputs == [output] }),
              let scale = graph.initializers[node.inputs[1]]?.storage.floats.first else {
            throw TestFailure("output '\(output)' does not leave through a DequantizeLinear")
        }
        return scale
    }

    struct TestFailure: Error, CustomStringConvertible {
        let description: String
        init(_ description: String) { self.description = description }
    }

    static func randomImages(_ count: Int, side: Int, seed: UInt64) throws -> LabeledImages {
        try LabeledImages(count: count, channels: 1, height: side, width: side,
                          pixels: randomValues(count * side * side, seed: seed, range: -1...2),
                          labels: (0..<count).map { $0 % 10 }, classNames: (0..<10).map(String.init))
    }

    /// conv 3×3 → relu → depthwise 3×3 → clip(0, 6) → add(residual) → GAP → flatten → gemm (as in QuantizationTests).
    static func smallNetwork() -> Graph {
        let initializers = [
            floatInitializer("w1", [8, 1, 3, 3], seed: 1, range: -0.5...0.5), floatInitializer("b1", [8], seed: 2, range: -0.1...0.1),
            floatInitializer("w2", [8, 1, 3, 3], seed: 3, range: -0.5...0.5), floatInitializer("b2", [8], seed: 4, range: -0.1...0.1),
            floatInitializer("fc", [10, 8], seed: 5, range: -0.5...0.5), floatInitializer("fcb", [10], seed: 6, range: -0.1...0.1),
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

    /// conv 3×3 stride 2 (16→8) → relu → depthwise stride 2 (8→4) → relu → maxpool 2×2 (4→2) → 1×1 conv →
    /// flatten [12·2·2] → gemm.
    static func stridedNetwork() -> Graph {
        let initializers = [
            floatInitializer("w1", [8, 1, 3, 3], seed: 21, range: -0.5...0.5), floatInitializer("b1", [8], seed: 22, range: -0.1...0.1),
            floatInitializer("w2", [8, 1, 3, 3], seed: 23, range: -0.5...0.5), floatInitializer("b2", [8], seed: 24, range: -0.1...0.1),
            floatInitializer("w3", [12, 8, 1, 1], seed: 25, range: -0.5...0.5), floatInitializer("b3", [12], seed: 26, range: -0.1...0.1),
            floatInitializer("fc", [10, 48], seed: 27, range: -0.3...0.3), floatInitializer("fcb", [10], seed: 28, range: -0.1...0.1),
        ]
        let nodes = [
            Node(name: "stem", op: .conv, inputs: ["x", "w1", "b1"], outputs: ["c1"],
                 attributes: ["pads": .ints([1, 1, 1, 1]), "strides": .ints([2, 2]), "kernel_shape": .ints([3, 3])]),
            Node(name: "relu1", op: .relu, inputs: ["c1"], outputs: ["r1"]),
            Node(name: "dw", op: .conv, inputs: ["r1", "w2", "b2"], outputs: ["c2"],
                 attributes: ["pads": .ints([1, 1, 1, 1]), "strides": .ints([2, 2]), "group": .int(8), "kernel_shape": .ints([3, 3])]),
            Node(name: "relu2", op: .relu, inputs: ["c2"], outputs: ["r2"]),
            Node(name: "pool", op: .maxPool, inputs: ["r2"], outputs: ["p"], attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]),
            Node(name: "pw", op: .conv, inputs: ["p", "w3", "b3"], outputs: ["c3"], attributes: ["kernel_shape": .ints([1, 1])]),
            Node(name: "flatten", op: .flatten, inputs: ["c3"], outputs: ["f"], attributes: ["axis": .int(1)]),
            Node(name: "fc", op: .gemm, inputs: ["f", "fc", "fcb"], outputs: ["logits"], attributes: ["transB": .int(1)]),
        ]
        return Graph(name: "strided", inputs: [ValueInfo(name: "x", shape: [-1, 1, 16, 16])], outputs: [ValueInfo(name: "logits", shape: [-1, 10])],
                     nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
    }
}
