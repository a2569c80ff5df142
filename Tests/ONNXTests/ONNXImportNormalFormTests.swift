import Foundation
import Graph
import ONNX
import XCTest

/// The importer's output is in the normal form GraphIR.swift promises: folded exporter idioms, attributes instead
/// of constant inputs, dynamic batch as -1.
final class ONNXImportNormalFormTests: XCTestCase {
    private func graph(_ name: String, forTraining: Bool = true) throws -> Graph {
        try ONNXImporter.importModel(at: URL(fileURLWithPath: try ONNXTestCases.shared().named(name).file), forTraining: forTraining)
    }

    private func counts(_ graph: Graph) -> [OpType: Int] {
        graph.nodes.reduce(into: [:]) { $0[$1.op, default: 0] += 1 }
    }

    func testClipBoundsFromConstantNodesBecomeAttributes() throws {
        let g = try graph("clip_constant_nodes")
        XCTAssertEqual(g.nodes.count, 1)
        XCTAssertEqual(g.nodes[0].op, .clip)
        XCTAssertEqual(g.nodes[0].inputs, ["x"])
        XCTAssertEqual(g.nodes[0].attributes["min"], .float(0))
        XCTAssertEqual(g.nodes[0].attributes["max"], .float(6))
        XCTAssertTrue(g.initializers.isEmpty, "folded constants must not linger: \(g.initializers.keys)")

        let maxOnly = try graph("clip_max_only").nodes[0]
        XCTAssertNil(maxOnly.attributes["min"])
        XCTAssertEqual(maxOnly.attributes["max"], .float(0.25))
    }

    func testShapeChainsFoldToStaticReshape() throws {
        let opset13 = try graph("reshape_shape_chain")
        XCTAssertEqual(opset13.nodes.map(\.op), [.reshape])
        XCTAssertEqual(opset13.nodes[0].inputs, ["x"])
        XCTAssertEqual(opset13.nodes[0].ints("shape"), [0, -1])
        XCTAssertTrue(opset13.initializers.isEmpty)

        // The channel count is static, so it folds to its value; the batch stays a copy (0).
        let opset11 = try graph("reshape_shape_chain_opset11")
        XCTAssertEqual(opset11.nodes.map(\.op), [.reshape])
        XCTAssertEqual(opset11.nodes[0].ints("shape"), [0, 4, -1])

        XCTAssertEqual(try graph("reshape_initializer").nodes[0].ints("shape"), [0, -1])
        XCTAssertEqual(try graph("reshape_initializer").outputs[0].shape, [-1, 36])
    }

    func testPadAndDropoutConstantInputsBecomeAttributes() throws {
        let pad = try graph("pad_constant").nodes[0]
        XCTAssertEqual(pad.inputs, ["x"])
        XCTAssertEqual(pad.ints("pads"), [0, 0, 1, 2, 0, 0, 2, 1])
        XCTAssertEqual(pad.attributes["value"], .float(0.5))
        XCTAssertEqual(try graph("pad_opset18_axes").nodes[0].ints("pads"), [0, 0, 1, 0, 0, 0, 1, 3])

        let dropout = try graph("dropout_ratio_input").nodes[0]
        XCTAssertEqual(dropout.inputs, ["x"])
        XCTAssertEqual(dropout.attributes["ratio"], .float(0.3))
        // The unused mask output is dropped.
        XCTAssertEqual(try graph("dropout_opset11_with_mask").nodes[0].outputs, ["y"])
    }

    func testMixedNetFoldsIdiomsAndKeepsTrainingOps() throws {
        let training = try graph("mixed_pytorch_style")
        XCTAssertEqual(counts(training), [.conv: 2, .batchNormalization: 2, .relu: 1, .clip: 1, .maxPool: 1,
                                          .globalAveragePool: 1, .reshape: 1, .dropout: 1, .gemm: 1, .softmax: 1])
        XCTAssertEqual(training.inputs[0].shape, [-1, 3, 12, 12])
        XCTAssertEqual(Set(training.nodes.map(\.name)).count, training.nodes.count, "node names must be unique")
        for node in training.nodes where node.op == .conv || node.op == .batchNormalization || node.op == .gemm {
            for input in node.inputs.dropFirst() where !input.isEmpty {
                XCTAssertNotNil(training.initializers[input], "\(node.name): \(input) must be an initializer")
            }
        }

        let inference = try graph("mixed_pytorch_style", forTraining: false)
        XCTAssertNil(counts(inference)[.batchNormalization])
        XCTAssertNil(counts(inference)[.dropout])
        XCTAssertEqual(counts(inference)[.conv], 2)
    }

    func testPyTorchMobileNetV2ImportsWithDynamicBatch() throws {
        let training = try ONNXImporter.importModel(at: TestPaths.pytorchModel, forTraining: true)
        XCTAssertEqual(counts(training), [.conv: 52, .batchNormalization: 52, .relu: 35, .add: 10,
                                          .globalAveragePool: 1, .flatten: 1, .gemm: 1])
        XCTAssertEqual(training.inputs.map(\.name), ["input"])
        XCTAssertEqual(training.inputs[0].shape, [-1, 1, 32, 32])
        XCTAssertEqual(training.outputs.map(\.name), ["logits"])
        XCTAssertEqual(training.outputs[0].shape, [-1, 10])
        XCTAssertEqual(training.metadata["onnx.opset"], "13")

        let inference = try ONNXImporter.importModel(at: TestPaths.pytorchModel, forTraining: false)
        XCTAssertEqual(counts(inference), [.conv: 52, .relu: 35, .add: 10, .globalAveragePool: 1, .flatten: 1, .gemm: 1])
        // Folded: conv weights + biases + FC = PyTorch's trainable parameter count minus BN scale/shift (folded in).
        let parameters = inference.initializers.values.reduce(0) { $0 + $1.storage.count }
        print("PyTorch MobileNetV2-FMNIST inference form: \(inference.nodes.count) nodes, \(parameters) parameters")
    }

    func testMobileNetV2_224Structure() throws {
        let training = try graph("mobilenetv2_224")
        XCTAssertEqual(counts(training), [.conv: 52, .batchNormalization: 52, .clip: 35, .add: 10,
                                          .globalAveragePool: 1, .flatten: 1, .dropout: 1, .gemm: 1])
        XCTAssertTrue(training.nodes.filter { $0.op == .clip }.allSatisfy { $0.attributes["min"] == .float(0) && $0.attributes["max"] == .float(6) })
        let inference = try graph("mobilenetv2_224", forTraining: false)
        XCTAssertEqual(counts(inference), [.conv: 52, .clip: 35, .add: 10, .globalAveragePool: 1, .flatten: 1, .gemm: 1])
    }

    /// The engines pool with ceil_mode 0: the importer turns ceil_mode 1 into the equivalent extra end padding.
    func testCeilModeBecomesExplicitEndPadding() throws {
        let maxPool = try graph("max_pool_ceil")
        XCTAssertNil(maxPool.nodes[0].attributes["ceil_mode"])
        XCTAssertEqual(maxPool.nodes[0].ints("pads"), [0, 0, 1, 1])
        XCTAssertEqual(maxPool.outputs[0].shape, [-1, 3, 4, 4])
        // 8×10 input, k3 s2 p1: ceil gives 5×6 windows where floor gives 4×5, so one more pad at each end.
        let averagePool = try graph("average_pool_ceil")
        XCTAssertEqual(averagePool.nodes[0].ints("pads"), [1, 1, 2, 2])
        XCTAssertEqual(averagePool.outputs[0].shape, [-1, 3, 5, 6])
    }

    func testQuantizeDequantizeKeepsInitializerParameters() throws {
        let g = try graph("quantize_dequantize")
        XCTAssertEqual(g.nodes.map(\.op), [.quantizeLinear, .dequantizeLinear])
        XCTAssertEqual(g.initializers["qs"]?.storage, .float32([0.02]))
        XCTAssertEqual(g.initializers["qz"]?.storage, .uint8([128]))
        XCTAssertEqual(g.nodes[0].attributes["axis"], .int(1))
    }
}
