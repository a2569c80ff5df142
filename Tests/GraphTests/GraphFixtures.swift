import Foundation
import Graph

/// Small graphs shared by the Graph tests.
enum GraphFixtures {
    static func values(_ count: Int, seed: Int) -> [Float] {
        (0..<count).map { Float(sin(Double($0 * 7 + seed * 13) * 0.37)) }
    }

    static func floats(_ name: String, _ shape: [Int], seed: Int) -> Initializer {
        Initializer(name: name, shape: shape, storage: .float32(values(shape.reduce(1, *), seed: seed)))
    }

    /// conv(3→8, stride 2) → BN → relu6 → depthwise → pointwise → add → GAP → flatten → gemm(8→10), plus a
    /// quantize/dequantize pair and initializers of every dtype.
    static func network() -> Graph {
        let initializers: [Initializer] = [
            floats("conv.w", [8, 3, 3, 3], seed: 1), floats("conv.b", [8], seed: 2),
            floats("bn.scale", [8], seed: 3), floats("bn.bias", [8], seed: 4), floats("bn.mean", [8], seed: 5),
            Initializer(name: "bn.var", shape: [8], storage: .float32([Float](repeating: 0.5, count: 8))),
            floats("dw.w", [8, 1, 3, 3], seed: 6), floats("pw.w", [8, 8, 1, 1], seed: 7),
            floats("fc.w", [10, 8], seed: 8), floats("fc.b", [10], seed: 9),
            Initializer(name: "q.scale", shape: [], storage: .float32([0.05])),
            Initializer(name: "q.zero", shape: [], storage: .uint8([128])),
            Initializer(name: "w.int8", shape: [2, 3], storage: .int8([-128, -1, 0, 1, 2, 127])),
            Initializer(name: "w.int32", shape: [3], storage: .int32([-70000, 0, 70000])),
            Initializer(name: "w.int64", shape: [2], storage: .int64([-5_000_000_000, 42])),
        ]
        let nodes = [
            Node(name: "conv", op: .conv, inputs: ["input", "conv.w", "conv.b"], outputs: ["c"],
                 attributes: ["strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1]), "kernel_shape": .ints([3, 3])]),
            Node(name: "bn", op: .batchNormalization, inputs: ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], outputs: ["b"],
                 attributes: ["epsilon": .float(1e-5)]),
            Node(name: "relu6", op: .clip, inputs: ["b"], outputs: ["r"], attributes: ["min": .float(0), "max": .float(6)]),
            Node(name: "dw", op: .conv, inputs: ["r", "dw.w"], outputs: ["d"], attributes: ["group": .int(8), "pads": .ints([1, 1, 1, 1])]),
            Node(name: "pw", op: .conv, inputs: ["d", "pw.w"], outputs: ["p"]),
            Node(name: "add", op: .add, inputs: ["r", "p"], outputs: ["s"]),
            Node(name: "q", op: .quantizeLinear, inputs: ["s", "q.scale", "q.zero"], outputs: ["sq"]),
            Node(name: "dq", op: .dequantizeLinear, inputs: ["sq", "q.scale", "q.zero"], outputs: ["sd"]),
            Node(name: "gap", op: .globalAveragePool, inputs: ["sd"], outputs: ["g"]),
            Node(name: "flatten", op: .flatten, inputs: ["g"], outputs: ["f"], attributes: ["axis": .int(1)]),
            Node(name: "fc", op: .gemm, inputs: ["f", "fc.w", "fc.b"], outputs: ["logits"],
                 attributes: ["transB": .int(1), "alpha": .float(1), "beta": .float(1), "note": .string("fc layer"),
                              "weights": .floats([0.25, -.infinity, .infinity])]),
        ]
        return Graph(name: "fixture", inputs: [ValueInfo(name: "input", shape: [-1, 3, 28, 28])],
                     outputs: [ValueInfo(name: "logits", shape: [-1, 10])], nodes: nodes,
                     initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }),
                     metadata: ["producer": "GraphTests", "labels": "a,b,c"])
    }
}
