import Foundation
import Graph
import Inference
import Tensor
import XCTest

final class MoreOperatorTests: XCTestCase {
    func naivePool(_ x: Tensor, kernel: [Int], strides: [Int], pads: [Int], isMax: Bool, includePad: Bool) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let oh = (h + pads[0] + pads[2] - kernel[0]) / strides[0] + 1, ow = (w + pads[1] + pads[3] - kernel[1]) / strides[1] + 1
        var out = Tensor(zeros: [n, c, oh, ow])
        for p in 0..<(n * c) { for oy in 0..<oh { for ox in 0..<ow {
            var best = -Float.infinity, sum: Float = 0, count = 0
            for ky in 0..<kernel[0] { for kx in 0..<kernel[1] {
                let y = oy * strides[0] - pads[0] + ky, xx = ox * strides[1] - pads[1] + kx
                if y < 0 || y >= h || xx < 0 || xx >= w { continue }
                let v = x.data[(p * h + y) * w + xx]
                best = max(best, v); sum += v; count += 1
            } }
            out.data[(p * oh + oy) * ow + ox] = isMax ? best : sum / Float(includePad ? kernel[0] * kernel[1] : count)
        } } }
        return out
    }

    func testMaxAndAveragePool() throws {
        let x = randomTensor([3, 4, 9, 8], seed: 1)
        for (kernel, strides, pads) in [([2, 2], [2, 2], [0, 0, 0, 0]), ([3, 3], [2, 2], [1, 1, 1, 1]), ([3, 2], [1, 2], [1, 0, 2, 1])] {
            for op in [OpType.maxPool, .averagePool] {
                for includePad in [0, 1] where op == .averagePool || includePad == 0 {
                    let graph = singleNodeGraph(op, inputShape: [-1, 4, 9, 8], attributes: [
                        "kernel_shape": .ints(kernel), "strides": .ints(strides), "pads": .ints(pads), "count_include_pad": .int(includePad)])
                    assertClose(try runSingle(graph, x), naivePool(x, kernel: kernel, strides: strides, pads: pads,
                                                                  isMax: op == .maxPool, includePad: includePad == 1))
                }
            }
        }
    }

    func testSoftmaxOnEveryAxis() throws {
        let x = randomTensor([3, 4, 5], seed: 2, range: -5...5)
        for axis in [-1, 0, 1, 2] {
            let a = axis < 0 ? axis + 3 : axis
            var expected = x
            let strides = rowMajorStrides(x.shape)
            for i in 0..<x.count {
                let index = (0..<3).map { (i / strides[$0]) % x.shape[$0] }
                var denominator: Float = 0
                for j in 0..<x.shape[a] {
                    var other = index
                    other[a] = j
                    denominator += exp(x.data[zip(other, strides).map(*).reduce(0, +)])
                }
                expected.data[i] = exp(x.data[i]) / denominator
            }
            assertClose(try runSingle(singleNodeGraph(.softmax, inputShape: [-1, 4, 5], attributes: ["axis": .int(axis)]), x), expected,
                        tolerance: 1e-5)
        }
    }

    func testConcatPadReshape() throws {
        let other = floatInitializer("o", [3, 2, 5], seed: 3)
        let x = randomTensor([3, 4, 5], seed: 4)
        let concat = try runSingle(singleNodeGraph(.concat, inputShape: [-1, 4, 5], initializers: [other], attributes: ["axis": .int(1)]), x)
        XCTAssertEqual(concat.shape, [3, 6, 5])
        for n in 0..<3 {
            XCTAssertEqual(Array(concat.data[(n * 30)..<(n * 30 + 20)]), Array(x.data[(n * 20)..<(n * 20 + 20)]))
            XCTAssertEqual(Array(concat.data[(n * 30 + 20)..<(n * 30 + 30)]), Array(other.storage.floats[(n * 10)..<(n * 10 + 10)]))
        }
        let padded = try runSingle(singleNodeGraph(.pad, inputShape: [-1, 4, 5], attributes: ["pads": .ints([0, 1, 2, 0, 2, 1]), "value": .float(-7)]), x)
        XCTAssertEqual(padded.shape, [3, 7, 8])
        for n in 0..<3 { for i in 0..<7 { for j in 0..<8 {
            let inside = i >= 1 && i < 5 && j >= 2 && j < 7
            XCTAssertEqual(padded.data[(n * 7 + i) * 8 + j], inside ? x.data[(n * 4 + i - 1) * 5 + j - 2] : -7)
        } } }
        let reshaped = try runSingle(singleNodeGraph(.reshape, inputShape: [-1, 4, 4], attributes: ["shape": .ints([0, -1, 2])]), randomTensor([3, 4, 4], seed: 5))
        XCTAssertEqual(reshaped.shape, [3, 8, 2])
    }

    func testMatMul2DBatchedAndBroadcast() throws {
        // [3, 2, 4, 6] · [2, 6, 5] → [3, 2, 4, 5]
        let bInit = floatInitializer("b", [2, 6, 5], seed: 6)
        let x = randomTensor([3, 2, 4, 6], seed: 7)
        let y = try runSingle(singleNodeGraph(.matMul, inputShape: [-1, 2, 4, 6], initializers: [bInit]), x)
        XCTAssertEqual(y.shape, [3, 2, 4, 5])
        for n in 0..<3 { for g in 0..<2 {
            let a = Array(x.data[((n * 2 + g) * 24)..<((n * 2 + g + 1) * 24)])
            let b = Array(bInit.storage.floats[(g * 30)..<((g + 1) * 30)])
            let expected = Naive.matmul(a, b, m: 4, n: 5, k: 6)
            for i in 0..<20 { XCTAssertEqual(y.data[(n * 2 + g) * 20 + i], expected[i], accuracy: 1e-5) }
        } }
        let plain = floatInitializer("w", [6, 7], seed: 8)
        let x2 = randomTensor([5, 6], seed: 9)
        assertClose(try runSingle(singleNodeGraph(.matMul, inputShape: [-1, 6], initializers: [plain]), x2),
                    Tensor(shape: [5, 7], data: Naive.matmul(x2.data, plain.storage.floats, m: 5, n: 7, k: 6)))
    }

    func testQuantizeRoundsHalfToEvenAndSaturates() throws {
        let scale = Initializer(name: "s", shape: [], storage: .float32([0.5]))
        let zeroU8 = Initializer(name: "z", shape: [], storage: .uint8([10]))
        let x = Tensor(shape: [1, 8], data: [0.25, 0.75, 1.25, -0.25, -5.25, 200, -200, 1.0])
        let graph = Graph(name: "q", inputs: [ValueInfo(name: "x", shape: [-1, 8])], outputs: [ValueInfo(name: "y", shape: []), ValueInfo(name: "d", shape: [])],
                          nodes: [Node(name: "q", op: .quantizeLinear, inputs: ["x", "s", "z"], outputs: ["y"]),
                                  Node(name: "dq", op: .dequantizeLinear, inputs: ["y", "s", "z"], outputs: ["d"])],
                          initializers: ["s": scale, "z": zeroU8])
        let out = try FloatExecutor(graph: graph).run(["x": x])
        // x/0.5 = 0.5, 1.5, 2.5, -0.5, -10.5, 400, -400, 2 → even rounding 0, 2, 2, -0, -10 → + 10, saturate to [0, 255].
        XCTAssertEqual(out["y"]?.data, [10, 12, 12, 10, 0, 255, 0, 12])
        XCTAssertEqual(out["d"]?.data, [0, 1, 1, 0, -5, 122.5, -5, 1])

        let scales = Initializer(name: "s", shape: [3], storage: .float32([0.1, 1, 10]))
        let zeros = Initializer(name: "z", shape: [3], storage: .int8([0, -3, 5]))
        let perAxis = singleNodeGraph(.quantizeLinear, inputShape: [-1, 3, 2], initializers: [scales, zeros], attributes: ["axis": .int(1)])
        let input = Tensor(shape: [1, 3, 2], data: [0.05, 100, 2.5, -200, 15, -2000])
        XCTAssertEqual(try runSingle(perAxis, input).data, [0, 127, -1, -128, 7, -128])
        let noZeroPoint = singleNodeGraph(.quantizeLinear, inputShape: [-1, 2], initializers: [Initializer(name: "s", shape: [1], storage: .float32([2]))])
        XCTAssertEqual(try runSingle(noZeroPoint, Tensor(shape: [1, 2], data: [-3, 3])).data, [0, 2], "default zero point is uint8 0")
    }

    /// The simulation's QuantizeLinear → DequantizeLinear pairs run as one pass (vector kernel, chunks on two
    /// threads): bit-identical to the two ONNX operators written out elementwise, for ties, saturation, ±inf, NaN
    /// (→ the zero point), −0, uint8 and narrow int8 grids; a pair whose quantized value is also read elsewhere
    /// (here: a graph output) is not fused and gives the same values.
    func testFusedQuantizeDequantizeIsBitIdenticalToTheTwoOperators() throws {
        let edges: [Float] = [0, -0.0, 0.25, 0.75, 1.25, -0.25, -5.25, 1e9, -1e9, .infinity, -.infinity, .nan, 63.5, 64.5, -63.5]
        let count = 200_003  // above the two-thread threshold, odd length for the vector tails
        let values = (0..<count).map { i in i < edges.count ? edges[i] : Float(i % 1000 - 500) * 0.031 + Float(i % 7) * 0.25 }
        let x = Tensor(shape: [1, count], data: values)
        for (zeroPoint, bits) in [(Initializer(name: "z", shape: [], storage: .uint8([10])), 8),
                                  (Initializer(name: "z", shape: [], storage: .int8([-3])), 4)] {
            let isSigned = zeroPoint.storage.dataType == .int8
            let (low, high): (Float, Float) = isSigned ? (bits >= 8 ? (-128, 127) : (-Float((1 << (bits - 1)) - 1), Float((1 << (bits - 1)) - 1)))
                                                       : (0, Float((1 << bits) - 1))
            let scale: Float = 0.5, z = zeroPoint.storage.floats[0]
            let expectedQ = values.map { v -> Float in
                let q = (v / scale).rounded(.toNearestOrEven) + z
                return q.isNaN ? z : min(max(q, low), high)
            }
            let expectedD = expectedQ.map { ($0 - z) * scale }
            let nodes = [Node(name: "q", op: .quantizeLinear, inputs: ["x", "s", "z"], outputs: ["y"], attributes: ["bits": .int(bits)]),
                         Node(name: "dq", op: .dequantizeLinear, inputs: ["y", "s", "z"], outputs: ["d"])]
            let initializers = ["s": Initializer(name: "s", shape: [], storage: .float32([scale])), "z": zeroPoint]
            let fused = Graph(name: "pair", inputs: [ValueInfo(name: "x", shape: [-1, count])], outputs: [ValueInfo(name: "d", shape: [])],
                              nodes: nodes, initializers: initializers)
            let separate = Graph(name: "both", inputs: [ValueInfo(name: "x", shape: [-1, count])],
                                 outputs: [ValueInfo(name: "y", shape: []), ValueInfo(name: "d", shape: [])], nodes: nodes, initializers: initializers)
            let fusedOut = try FloatExecutor(graph: fused, threads: 2).run(["x": x])["d"]!.data
            let separateOut = try FloatExecutor(graph: separate, threads: 2).run(["x": x])
            XCTAssertEqual(fusedOut.map(\.bitPattern), expectedD.map(\.bitPattern), "fused, bits \(bits)")
            XCTAssertEqual(separateOut["d"]!.data.map(\.bitPattern), expectedD.map(\.bitPattern), "separate, bits \(bits)")
            XCTAssertEqual(separateOut["y"]!.data.map(\.bitPattern), expectedQ.map(\.bitPattern), "QuantizeLinear, bits \(bits)")
        }
    }
}
