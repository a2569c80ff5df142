import Graph
import Inference
import Tensor
import XCTest

final class OperatorTests: XCTestCase {
    func testBatchNormalizationInferenceMode() throws {
        let c = 5
        let scale = floatInitializer("s", [c], seed: 1), bias = floatInitializer("b", [c], seed: 2)
        let mean = floatInitializer("m", [c], seed: 3), variance = floatInitializer("v", [c], seed: 4, range: 0.1...2)
        let graph = singleNodeGraph(.batchNormalization, inputShape: [-1, c, 4, 3], initializers: [scale, bias, mean, variance],
                                    attributes: ["epsilon": .float(1e-3)])
        let x = randomTensor([3, c, 4, 3], seed: 5)
        var expected = x
        for i in 0..<x.count {
            let ch = (i / 12) % c
            expected.data[i] = (x.data[i] - mean.storage.floats[ch]) / (variance.storage.floats[ch] + 1e-3).squareRoot()
                * scale.storage.floats[ch] + bias.storage.floats[ch]
        }
        assertClose(try runSingle(graph, x), expected)
    }

    func testReluClipAndIdentityLikeOps() throws {
        let x = randomTensor([3, 4, 5], seed: 6, range: -3...3)
        assertClose(try runSingle(singleNodeGraph(.relu, inputShape: [-1, 4, 5]), x), Tensor(shape: x.shape, data: x.data.map { max($0, 0) }))
        let clip = singleNodeGraph(.clip, inputShape: [-1, 4, 5], attributes: ["min": .float(-0.5), "max": .float(6)])
        assertClose(try runSingle(clip, x), Tensor(shape: x.shape, data: x.data.map { min(max($0, -0.5), 6) }))
        assertClose(try runSingle(singleNodeGraph(.dropout, inputShape: [-1, 4, 5], attributes: ["ratio": .float(0.5)]), x), x)
        assertClose(try runSingle(singleNodeGraph(.identity, inputShape: [-1, 4, 5]), x), x)
    }

    func testAddAndMulBroadcast() throws {
        let x = randomTensor([3, 4, 2, 5], seed: 7)
        for (shape, seed) in [([4, 1, 1], UInt64(8)), ([5], 9), ([3, 4, 2, 5], 10), ([1, 4, 2, 1], 11), ([], 12)] {
            let other = floatInitializer("o", shape, seed: seed)
            for op in [OpType.add, .mul] {
                let graph = singleNodeGraph(op, inputShape: [-1, 4, 2, 5], initializers: [other])
                var expected = x
                let o = other.storage.floats
                for n in 0..<3 { for c in 0..<4 { for h in 0..<2 { for w in 0..<5 {
                    let i = ((n * 4 + c) * 2 + h) * 5 + w
                    let value: Float
                    switch shape {
                    case [4, 1, 1]: value = o[c]
                    case [5]: value = o[w]
                    case [1, 4, 2, 1]: value = o[c * 2 + h]
                    case []: value = o[0]
                    default: value = o[i]
                    }
                    expected.data[i] = op == .add ? x.data[i] + value : x.data[i] * value
                } } } }
                assertClose(try runSingle(graph, x), expected)
            }
        }
        // Broadcast in both directions: [3,1,5] + [4,1] -> [3,4,5].
        let graph = Graph(name: "b", inputs: [ValueInfo(name: "x", shape: [3, 1, 5]), ValueInfo(name: "z", shape: [4, 1])],
                          outputs: [ValueInfo(name: "y", shape: [])], nodes: [Node(name: "add", op: .add, inputs: ["x", "z"], outputs: ["y"])])
        let a = randomTensor([3, 1, 5], seed: 13), b = randomTensor([4, 1], seed: 14)
        let y = try XCTUnwrap(FloatExecutor(graph: graph).run(["x": a, "z": b])["y"])
        XCTAssertEqual(y.shape, [3, 4, 5])
        for i in 0..<3 { for j in 0..<4 { for k in 0..<5 {
            XCTAssertEqual(y.data[(i * 4 + j) * 5 + k], a.data[i * 5 + k] + b.data[j], accuracy: 1e-6)
        } } }
    }

    func testGlobalAveragePoolAndFlatten() throws {
        let x = randomTensor([3, 4, 5, 7], seed: 15)
        var expected = Tensor(zeros: [3, 4, 1, 1])
        for p in 0..<12 { expected.data[p] = x.data[(p * 35)..<((p + 1) * 35)].reduce(0, +) / 35 }
        assertClose(try runSingle(singleNodeGraph(.globalAveragePool, inputShape: [-1, 4, 5, 7]), x), expected)
        let flat = try runSingle(singleNodeGraph(.flatten, inputShape: [-1, 4, 5, 7]), x)
        XCTAssertEqual(flat.shape, [3, 140])
        XCTAssertEqual(flat.data, x.data)
        let flat2 = try runSingle(singleNodeGraph(.flatten, inputShape: [-1, 4, 5, 7], attributes: ["axis": .int(-1)]), x)
        XCTAssertEqual(flat2.shape, [60, 7])
    }

    func testGemmAllTransposesAlphaBeta() throws {
        let (m, k, n) = (3, 13, 10)
        for transA in [0, 1] { for transB in [0, 1] {
            for cShape in [[n], [m, n], [1, 1], [m, 1]] {
                let bValues = randomValues(k * n, seed: 16)
                let b = Initializer(name: "b", shape: transB == 1 ? [n, k] : [k, n],
                                    storage: .float32(transB == 1 ? Naive.transpose(bValues, rows: k, columns: n) : bValues))
                let c = floatInitializer("c", cShape, seed: 17)
                let graph = singleNodeGraph(.gemm, inputShape: transA == 1 ? [k, -1] : [-1, k], initializers: [b, c],
                                            attributes: ["transA": .int(transA), "transB": .int(transB), "alpha": .float(0.5), "beta": .float(2)])
                let aValues = randomValues(m * k, seed: 18)
                let x = transA == 1 ? Tensor(shape: [k, m], data: Naive.transpose(aValues, rows: m, columns: k)) : Tensor(shape: [m, k], data: aValues)
                let product = Naive.matmul(aValues, bValues, m: m, n: n, k: k)
                var expected = Tensor(zeros: [m, n])
                let cv = c.storage.floats
                for i in 0..<m { for j in 0..<n {
                    let cValue: Float = cShape == [n] ? cv[j] : cShape == [m, n] ? cv[i * n + j] : cShape == [m, 1] ? cv[i] : cv[0]
                    expected.data[i * n + j] = 0.5 * product[i * n + j] + 2 * cValue
                } }
                if transA == 1 {
                    // Dynamic dimension is not the first: run with the declared static shape instead.
                    var fixed = graph
                    fixed.inputs[0].shape = [k, m]
                    assertClose(try runSingle(fixed, x), expected)
                } else {
                    assertClose(try runSingle(graph, x), expected)
                }
            }
        } }
    }

    func testGemmWithRuntimeB() throws {
        let graph = Graph(name: "g", inputs: [ValueInfo(name: "x", shape: [4, 6]), ValueInfo(name: "w", shape: [5, 6])],
                          outputs: [ValueInfo(name: "y", shape: [])],
                          nodes: [Node(name: "gemm", op: .gemm, inputs: ["x", "w"], outputs: ["y"],
                                       attributes: ["transB": .int(1), "alpha": .float(3)])])
        let a = randomTensor([4, 6], seed: 19), w = randomTensor([5, 6], seed: 20)
        let y = try XCTUnwrap(FloatExecutor(graph: graph).run(["x": a, "w": w])["y"])
        let expected = Naive.matmul(a.data, Naive.transpose(w.data, rows: 5, columns: 6), m: 4, n: 5, k: 6).map { $0 * 3 }
        assertClose(y, Tensor(shape: [4, 5], data: expected))
    }
}
