import Foundation
import Graph
import Inference
import Tensor
import XCTest

/// Whole-graph checks: transforms must not change what the executor computes.
final class GraphTransformTests: XCTestCase {
    /// A small MobileNet-like block: conv-BN-relu, depthwise-BN-relu6, pointwise-BN, residual add, a BN that does
    /// not follow a conv, identity/dropout, pooling, flatten, gemm, softmax.
    static func smallNetwork() -> Graph {
        var initializers: [Initializer] = []
        func add(_ initializer: Initializer) -> String { initializers.append(initializer); return initializer.name }
        func bn(_ prefix: String, _ c: Int, seed: UInt64) -> [String] {
            [add(floatInitializer("\(prefix).scale", [c], seed: seed, range: 0.5...1.5)),
             add(floatInitializer("\(prefix).bias", [c], seed: seed + 1)),
             add(floatInitializer("\(prefix).mean", [c], seed: seed + 2)),
             add(floatInitializer("\(prefix).var", [c], seed: seed + 3, range: 0.2...2))]
        }
        let nodes: [Node] = [
            Node(name: "conv1", op: .conv, inputs: ["x", add(floatInitializer("conv1.w", [8, 3, 3, 3], seed: 1))], outputs: ["c1"],
                 attributes: ["strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]),
            Node(name: "bn1", op: .batchNormalization, inputs: ["c1"] + bn("bn1", 8, seed: 10), outputs: ["b1"]),
            Node(name: "relu1", op: .relu, inputs: ["b1"], outputs: ["r1"]),
            Node(name: "dw", op: .conv, inputs: ["r1", add(floatInitializer("dw.w", [8, 1, 3, 3], seed: 2)),
                                               add(floatInitializer("dw.b", [8], seed: 3))], outputs: ["d"],
                 attributes: ["group": .int(8), "pads": .ints([1, 1, 1, 1])]),
            Node(name: "bn2", op: .batchNormalization, inputs: ["d"] + bn("bn2", 8, seed: 20), outputs: ["b2"],
                 attributes: ["epsilon": .float(1e-3)]),
            Node(name: "relu6", op: .clip, inputs: ["b2"], outputs: ["r2"], attributes: ["min": .float(0), "max": .float(6)]),
            Node(name: "pw", op: .conv, inputs: ["r2", add(floatInitializer("pw.w", [8, 8, 1, 1], seed: 4))], outputs: ["p"]),
            Node(name: "bn3", op: .batchNormalization, inputs: ["p"] + bn("bn3", 8, seed: 30), outputs: ["b3"]),
            Node(name: "drop", op: .dropout, inputs: ["b3"], outputs: ["b3d"], attributes: ["ratio": .float(0.2)]),
            Node(name: "add", op: .add, inputs: ["r1", "b3d"], outputs: ["sum"]),
            Node(name: "bn4", op: .batchNormalization, inputs: ["sum"] + bn("bn4", 8, seed: 40), outputs: ["b4"]),
            Node(name: "pool", op: .globalAveragePool, inputs: ["b4"], outputs: ["g"]),
            Node(name: "flat", op: .flatten, inputs: ["g"], outputs: ["f"]),
            Node(name: "fc", op: .gemm, inputs: ["f", add(floatInitializer("fc.w", [5, 8], seed: 5)), add(floatInitializer("fc.b", [5], seed: 6))],
                 outputs: ["logits"], attributes: ["transB": .int(1)]),
            Node(name: "softmax", op: .softmax, inputs: ["logits"], outputs: ["probs"], attributes: ["axis": .int(1)]),
            Node(name: "out", op: .identity, inputs: ["probs"], outputs: ["y"]),
        ]
        return Graph(name: "small", inputs: [ValueInfo(name: "x", shape: [-1, 3, 15, 13])],
                     outputs: [ValueInfo(name: "y", shape: [-1, 5]), ValueInfo(name: "logits", shape: [-1, 5])], nodes: nodes,
                     initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
    }

    func testFoldingAndIdentityRemovalPreserveOutputs() throws {
        let graph = Self.smallNetwork()
        let folded = GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(graph))
        let ops = folded.nodes.map(\.op)
        XCTAssertEqual(ops.filter { $0 == .batchNormalization }.count, 1, "only the BN after Add stays")
        XCTAssertFalse(ops.contains(.dropout))
        XCTAssertFalse(ops.contains(.identity))
        XCTAssertNil(folded.initializers["bn1.mean"], "statistics of folded BNs are dropped")
        XCTAssertNotNil(folded.initializers["bn4.mean"])
        let reference = try FloatExecutor(graph: graph), optimized = try FloatExecutor(graph: folded)
        for batch in [1, 3] {
            let x = randomTensor([batch, 3, 15, 13], seed: 99 + UInt64(batch), range: -2...2)
            let expected = try reference.run(["x": x]), actual = try optimized.run(["x": x])
            for name in ["y", "logits"] {
                let a = try XCTUnwrap(actual[name]), e = try XCTUnwrap(expected[name])
                XCTAssertEqual(a.shape, [batch, 5])
                XCTAssertLessThanOrEqual(a.maxAbsoluteDifference(e), 1e-4, "\(name) batch \(batch)")
            }
        }
    }

    func testBatchNormalizationAfterSharedConvOutputStays() throws {
        var graph = Self.smallNetwork()
        // c1 now also feeds an extra graph output, so bn1 must not be folded.
        graph.outputs.append(ValueInfo(name: "c1", shape: []))
        let folded = try GraphTransforms.foldBatchNormalization(graph)
        XCTAssertTrue(folded.nodes.contains { $0.name == "bn1" })
        XCTAssertFalse(folded.nodes.contains { $0.name == "bn2" })
        let x = randomTensor([2, 3, 15, 13], seed: 7)
        let expected = try FloatExecutor(graph: graph).run(["x": x])
        let actual = try FloatExecutor(graph: folded).run(["x": x])
        XCTAssertLessThanOrEqual(try XCTUnwrap(actual["y"]).maxAbsoluteDifference(try XCTUnwrap(expected["y"])), 1e-4)
        XCTAssertEqual(actual["c1"], expected["c1"])
    }

    func testSharedConvWeightsAreCopiedNotChanged() throws {
        // Two convs read one weight tensor; each is followed by its own BN.
        let w = floatInitializer("w", [4, 2, 3, 3], seed: 1)
        var initializers = ["w": w]
        func bn(_ prefix: String, seed: UInt64) -> [String] {
            let parts = [floatInitializer("\(prefix).s", [4], seed: seed), floatInitializer("\(prefix).b", [4], seed: seed + 1),
                         floatInitializer("\(prefix).m", [4], seed: seed + 2), floatInitializer("\(prefix).v", [4], seed: seed + 3, range: 0.5...1)]
            for p in parts { initializers[p.name] = p }
            return parts.map(\.name)
        }
        let nodes = [
            Node(name: "a", op: .conv, inputs: ["x", "w"], outputs: ["ca"], attributes: ["pads": .ints([1, 1, 1, 1])]),
            Node(name: "bna", op: .batchNormalization, inputs: ["ca"] + bn("bna", seed: 10), outputs: ["ya"]),
            Node(name: "b", op: .conv, inputs: ["x", "w"], outputs: ["cb"]),
            Node(name: "bnb", op: .batchNormalization, inputs: ["cb"] + bn("bnb", seed: 20), outputs: ["yb"]),
        ]
        let graph = Graph(name: "shared", inputs: [ValueInfo(name: "x", shape: [-1, 2, 6, 6])],
                          outputs: [ValueInfo(name: "ya", shape: []), ValueInfo(name: "yb", shape: [])], nodes: nodes, initializers: initializers)
        let folded = try GraphTransforms.foldBatchNormalization(graph)
        XCTAssertEqual(folded.nodes.map(\.op), [.conv, .conv])
        XCTAssertNil(folded.initializers["w"], "the original shared weights have no reader left")
        XCTAssertNotEqual(folded.nodes[0].inputs[1], folded.nodes[1].inputs[1])
        let x = randomTensor([2, 2, 6, 6], seed: 3)
        let expected = try FloatExecutor(graph: graph).run(["x": x]), actual = try FloatExecutor(graph: folded).run(["x": x])
        for name in ["ya", "yb"] {
            XCTAssertLessThanOrEqual(try XCTUnwrap(actual[name]).maxAbsoluteDifference(try XCTUnwrap(expected[name])), 1e-4, name)
        }
    }

    func testBatchSizesAndThreadCountsAgree() throws {
        let graph = Self.smallNetwork()
        let x = randomTensor([4, 3, 15, 13], seed: 8)
        let one = try FloatExecutor(graph: graph, threads: 1).run(["x": x])["y"]!
        let two = try FloatExecutor(graph: graph, threads: 2).run(["x": x])["y"]!
        XCTAssertLessThanOrEqual(one.maxAbsoluteDifference(two), 1e-5)
        // Image 2 alone gives the same row as inside the batch.
        let single = Tensor(shape: [1, 3, 15, 13], data: Array(x.data[(2 * 585)..<(3 * 585)]))
        let alone = try FloatExecutor(graph: graph).run(["x": single])["y"]!
        XCTAssertLessThanOrEqual(alone.maxAbsoluteDifference(Tensor(shape: [1, 5], data: Array(two.data[10..<15]))), 1e-5)
    }

    func testConcurrentRunsOnOneExecutorAgree() throws {
        let executor = try FloatExecutor(graph: Self.smallNetwork())
        let inputs = (0..<6).map { randomTensor([1 + $0 % 3, 3, 15, 13], seed: 50 + UInt64($0)) }
        let expected = try inputs.map { try XCTUnwrap(executor.run(["x": $0])["y"]) }
        let lock = NSLock()
        nonisolated(unsafe) var results = [Tensor?](repeating: nil, count: inputs.count)
        DispatchQueue.concurrentPerform(iterations: inputs.count) { index in
            let output = try? executor.run(["x": inputs[index]])["y"]
            lock.lock()
            results[index] = output
            lock.unlock()
        }
        for index in inputs.indices { XCTAssertEqual(results[index], expected[index], "run \(index)") }
    }

    func testErrorsNameTheNode() throws {
        var graph = Self.smallNetwork()
        graph.nodes[3].inputs[0] = "missing"
        XCTAssertThrowsError(try FloatExecutor(graph: graph)) { error in
            XCTAssertTrue("\(error)".contains("'dw' (Conv)"), "\(error)")
        }
        let executor = try FloatExecutor(graph: Self.smallNetwork())
        XCTAssertThrowsError(try executor.run(["x": randomTensor([1, 3, 15, 12], seed: 1)])) { error in
            XCTAssertTrue("\(error)".contains("input 'x'"), "\(error)")
        }
        XCTAssertThrowsError(try executor.run([:]))
    }
}
