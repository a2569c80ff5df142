import Foundation
import Graph

/// Which nodes of a float graph get quantized and which tensors become quantization points (Q → DQ pairs).
/// See docs/quantization.md: a quantized node reads dequantized inputs and its output (after a fused ReLU/ReLU6)
/// is quantized unless it is a graph output; shape-only nodes (Flatten, Reshape, MaxPool, Identity) pass their input's grid through.
struct QDQPlan {
    /// Nodes computed in int8 (by name).
    let quantizedNodes: [String]
    /// Tensors that get a Q → DQ pair, in the order they are produced.
    let quantizationPoints: [String]
    /// Tensor → tensor whose grid it shares (pass-through nodes); resolved to a root observed tensor.
    let sharedGrid: [String: String]
    /// Tensors whose statistics must be observed (quantization points that do not share a grid).
    var observed: [String] { quantizationPoints.filter { sharedGrid[$0] == nil } }

    static let quantizableOps: Set<OpType> = [.conv, .gemm, .add, .globalAveragePool, .averagePool]
    static let passThroughOps: Set<OpType> = [.flatten, .reshape, .maxPool, .identity, .dropout]

    init(graph: Graph, skip: Set<String>) {
        var consumers: [String: [Node]] = [:]
        for node in graph.nodes { for input in node.inputs where !input.isEmpty { consumers[input, default: []].append(node) } }

        var quantized: [String] = []
        var points = Set<String>()
        let graphOutputs = Set(graph.outputs.map(\.name))
        for node in graph.nodes where Self.quantizableOps.contains(node.op) && !skip.contains(node.name) {
            let dataInputs = Self.dataInputs(of: node)
            // Every data input must be a runtime value (an Add with a constant operand stays float).
            guard dataInputs.allSatisfy({ graph.initializers[$0] == nil }) else { continue }
            if node.op == .conv || node.op == .gemm {
                guard node.inputs.count > 1, graph.initializers[node.inputs[1]] != nil else { continue }
                if node.inputs.count > 2, !node.inputs[2].isEmpty, graph.initializers[node.inputs[2]] == nil { continue }
                if node.op == .gemm && (node.int("transA", default: 0) != 0 || node.float("alpha", default: 1) != 1 || node.float("beta", default: 1) != 1) { continue }
            }
            quantized.append(node.name)
            points.formUnion(dataInputs)
            // A graph output stays float (the classifier's logits): nothing reads it as codes, and an 8-bit grid
            // on logits only adds ties to the top-1 decision.
            let output = Self.quantizedOutput(of: node, consumers: consumers)
            if !graphOutputs.contains(output) { points.insert(output) }
        }

        // Pass-through: a point produced by a shape-only node from another point shares that point's grid.
        var shared: [String: String] = [:]
        for node in graph.nodes where Self.passThroughOps.contains(node.op) {
            guard let output = node.outputs.first, points.contains(output), let input = node.inputs.first, points.contains(input) else { continue }
            shared[output] = shared[input] ?? input
        }
        let order = graph.inputs.map(\.name) + graph.nodes.flatMap(\.outputs)
        quantizationPoints = order.filter { points.contains($0) }
        quantizedNodes = quantized
        sharedGrid = shared
    }

    /// Inputs carrying activations (weights and biases excluded).
    static func dataInputs(of node: Node) -> [String] {
        switch node.op {
        case .add: return Array(node.inputs.prefix(2))
        default: return [node.inputs[0]]
        }
    }

    /// The node's output, or the output of a ReLU/ReLU6 that is its only consumer (fused into the output clamp).
    static func quantizedOutput(of node: Node, consumers: [String: [Node]]) -> String {
        let output = node.outputs[0]
        if node.op != .globalAveragePool, node.op != .averagePool,
           let users = consumers[output], users.count == 1, isFusableActivation(users[0]) {
            return users[0].outputs[0]
        }
        return output
    }

    static func isFusableActivation(_ node: Node) -> Bool {
        switch node.op {
        case .relu: return true
        case .clip: return node.float("min", default: -.infinity) == 0 && node.float("max", default: .infinity) > 0
        default: return false
        }
    }
}
