import Graph
import XCTest

final class ShapeInferenceTests: XCTestCase {
    func testNetworkShapesWithDynamicBatch() throws {
        let graph = try GraphFixtures.network().validated()
        XCTAssertEqual(graph.valueInfo["c"]?.shape, [-1, 8, 14, 14])
        XCTAssertEqual(graph.valueInfo["d"]?.shape, [-1, 8, 14, 14])
        XCTAssertEqual(graph.valueInfo["sq"]?.dataType, .uint8)
        XCTAssertEqual(graph.valueInfo["sd"]?.dataType, .float32)
        XCTAssertEqual(graph.valueInfo["g"]?.shape, [-1, 8, 1, 1])
        XCTAssertEqual(graph.valueInfo["f"]?.shape, [-1, 8])
        XCTAssertEqual(graph.valueInfo["logits"]?.shape, [-1, 10])
        XCTAssertEqual(graph.outputs[0].shape, [-1, 10])
        XCTAssertEqual(graph.valueInfo["input"]?.shape, [-1, 3, 28, 28])
        let concrete = try ShapeInference.infer(graph, inputShapes: ["input": [3, 3, 28, 28]])
        XCTAssertEqual(concrete["logits"]?.shape, [3, 10])
        XCTAssertEqual(concrete["c"]?.shape, [3, 8, 14, 14])
    }

    func node(_ op: OpType, _ inputs: [String], attributes: [String: AttributeValue] = [:]) -> Node {
        Node(name: "n", op: op, inputs: inputs, outputs: ["y"], attributes: attributes)
    }

    func shape(_ node: Node, input: [Int], initializers: [Initializer] = [], extraInputs: [ValueInfo] = []) throws -> [Int] {
        let graph = Graph(name: "t", inputs: [ValueInfo(name: "x", shape: input)] + extraInputs, outputs: [ValueInfo(name: "y", shape: [])],
                          nodes: [node], initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
        let validated = try graph.validated()
        return validated.valueInfo["y"]?.shape ?? []
    }

    func testReshapeZeroAndMinusOne() throws {
        XCTAssertEqual(try shape(node(.reshape, ["x"], attributes: ["shape": .ints([0, -1])]), input: [-1, 4, 3, 2]), [-1, 24])
        XCTAssertEqual(try shape(node(.reshape, ["x"], attributes: ["shape": .ints([-1, 24])]), input: [-1, 4, 3, 2]), [-1, 24])
        XCTAssertEqual(try shape(node(.reshape, ["x"], attributes: ["shape": .ints([2, -1, 3])]), input: [4, 3, 2]), [2, 4, 3])
        XCTAssertEqual(try shape(node(.reshape, ["x"], attributes: ["shape": .ints([0, 0, 6])]), input: [-1, 4, 3, 2]), [-1, 4, 6])
        XCTAssertThrowsError(try shape(node(.reshape, ["x"], attributes: ["shape": .ints([5, -1])]), input: [4, 3, 2]))
        XCTAssertThrowsError(try shape(node(.reshape, ["x"], attributes: ["shape": .ints([-1, -1])]), input: [4, 3, 2]))
    }

    func testPoolsFlattenConcatSoftmaxPadMatMul() throws {
        XCTAssertEqual(try shape(node(.maxPool, ["x"], attributes: ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]),
                                 input: [-1, 4, 9, 8]), [-1, 4, 5, 4])
        XCTAssertEqual(try shape(node(.averagePool, ["x"], attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]),
                                 input: [2, 4, 9, 8]), [2, 4, 4, 4])
        XCTAssertEqual(try shape(node(.flatten, ["x"], attributes: ["axis": .int(0)]), input: [2, 3, 4]), [1, 24])
        XCTAssertEqual(try shape(node(.flatten, ["x"], attributes: ["axis": .int(2)]), input: [-1, 3, 4]), [-1, 4])
        XCTAssertEqual(try shape(node(.concat, ["x", "z"], attributes: ["axis": .int(1)]), input: [-1, 3, 4],
                                 extraInputs: [ValueInfo(name: "z", shape: [-1, 5, 4])]), [-1, 8, 4])
        XCTAssertEqual(try shape(node(.softmax, ["x"]), input: [-1, 10]), [-1, 10])
        XCTAssertEqual(try shape(node(.pad, ["x"], attributes: ["pads": .ints([0, 0, 1, 2, 0, 0, 3, 4])]), input: [-1, 2, 5, 5]), [-1, 2, 9, 11])
        XCTAssertEqual(try shape(node(.matMul, ["x", "z"]), input: [-1, 3, 4], extraInputs: [ValueInfo(name: "z", shape: [4, 6])]), [-1, 3, 6])
        XCTAssertEqual(try shape(node(.matMul, ["x", "z"]), input: [2, 1, 3, 4], extraInputs: [ValueInfo(name: "z", shape: [5, 4, 6])]), [2, 5, 3, 6])
        XCTAssertEqual(try shape(node(.matMul, ["x", "z"]), input: [4], extraInputs: [ValueInfo(name: "z", shape: [4, 6])]), [6])
    }

    func testQuantizePerAxisAndErrors() throws {
        let scale = Initializer(name: "s", shape: [4], storage: .float32([0.1, 0.2, 0.3, 0.4]))
        let zero = Initializer(name: "z", shape: [4], storage: .int8([0, 1, 2, 3]))
        let graph = Graph(name: "q", inputs: [ValueInfo(name: "x", shape: [-1, 4, 2, 2])], outputs: [ValueInfo(name: "y", shape: [])],
                          nodes: [Node(name: "q", op: .quantizeLinear, inputs: ["x", "s", "z"], outputs: ["y"], attributes: ["axis": .int(1)])],
                          initializers: ["s": scale, "z": zero])
        XCTAssertEqual(try graph.validated().valueInfo["y"]?.dataType, .int8)
        var wrongAxis = graph
        wrongAxis.nodes[0].attributes["axis"] = .int(2)
        XCTAssertThrowsError(try wrongAxis.validated()) { error in
            XCTAssertTrue("\(error)".contains("node 'q' (QuantizeLinear)"), "\(error)")
        }
    }

    func testErrorsNameNodeOpAndExpectation() throws {
        var graph = GraphFixtures.network()
        graph.nodes[4].inputs[1] = "nowhere"
        XCTAssertThrowsError(try graph.validated()) { error in
            XCTAssertEqual("\(error)".hasPrefix("node 'pw' (Conv): input 1 'nowhere' is not defined"), true, "\(error)")
        }
        graph = GraphFixtures.network()
        graph.nodes.swapAt(0, 1)
        XCTAssertThrowsError(try graph.validated()) { error in XCTAssertTrue("\(error)".contains("'bn' (BatchNormalization)"), "\(error)") }
        graph = GraphFixtures.network()
        graph.nodes[0].attributes["group"] = .int(3)
        XCTAssertThrowsError(try graph.validated()) { error in XCTAssertTrue("\(error)".contains("group 3"), "\(error)") }
        graph = GraphFixtures.network()
        graph.nodes[0].attributes["pads"] = .ints([1, 1])
        XCTAssertThrowsError(try graph.validated()) { error in XCTAssertTrue("\(error)".contains("4 non-negative pads"), "\(error)") }
        graph = GraphFixtures.network()
        graph.nodes[0].attributes["auto_pad"] = .string("SAME_UPPER")
        XCTAssertThrowsError(try graph.validated())
        graph = GraphFixtures.network()
        graph.nodes[0].attributes["group"] = .float(1)
        XCTAssertThrowsError(try graph.validated()) { error in
            XCTAssertEqual("\(error)", "node 'conv' (Conv): attribute 'group' must be int, got float(1.0)")
        }
        graph = GraphFixtures.network()
        graph.nodes[5].outputs = ["r"]
        XCTAssertThrowsError(try graph.validated()) { error in XCTAssertTrue("\(error)".contains("already defined"), "\(error)") }
        graph = GraphFixtures.network()
        graph.outputs[0].shape = [-1, 11]
        XCTAssertThrowsError(try graph.validated()) { error in XCTAssertTrue("\(error)".contains("declared [-1, 11]"), "\(error)") }
        graph = GraphFixtures.network()
        graph.initializers["fc.w"] = GraphFixtures.floats("fc.w", [10, 9], seed: 1)
        XCTAssertThrowsError(try graph.validated()) { error in XCTAssertTrue("\(error)".contains("'fc' (Gemm)"), "\(error)") }
    }
}
