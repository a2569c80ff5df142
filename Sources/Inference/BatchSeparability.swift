import Graph

/// Whether a graph treats every image of a batch independently, so an executor may run a large batch as
/// several smaller ones (`BatchChunks`). Conservative: any operator that could mix images says no.
enum BatchSeparability {
    static func holds(for graph: Graph, shapes: [String: ValueInfo]) -> Bool {
        let produced = Set(graph.nodes.flatMap(\.outputs)).union(graph.inputs.map(\.name))
        // Constants: initializers, and in a QDQ graph the dequantized weights (DequantizeLinear of an initializer).
        var constants = graph.initializers.mapValues(\.shape)
        for node in graph.nodes where node.op == .dequantizeLinear {
            if let shape = graph.initializers[node.inputs[0]]?.shape { constants[node.outputs[0]] = shape }
        }
        guard graph.outputs.allSatisfy({ produced.contains($0.name) }) else { return false }
        for node in graph.nodes {
            switch node.op {
            case .conv, .batchNormalization, .relu, .clip, .globalAveragePool, .averagePool, .maxPool, .dropout,
                 .identity:
                continue
            case .quantizeLinear, .dequantizeLinear:
                // A per-channel weight (a constant) is quantized along its axis 0; an activation must not be.
                let constant = graph.initializers[node.inputs[0]] != nil
                if !constant && node.int("axis", default: 1) == 0 { return false }
            case .flatten:
                if node.int("axis", default: 1) < 1 { return false }
            case .softmax:
                if node.int("axis", default: -1) == 0 { return false }
            case .gemm:
                // Rows of A are images; B must be a constant (weights) and A must not be transposed.
                guard node.int("transA", default: 0) == 0, node.inputs.count > 1,
                      constants[node.inputs[1]] != nil else { return false }
                if node.inputs.count > 2, let bias = constants[node.inputs[2]], bias.count == 2,
                   bias[0] != 1 { return false }
            case .add, .mul:
                // A constant operand may broadcast over images, but must not have its own batch axis.
                let outputRank = shapes[node.outputs[0]]?.shape.count ?? 0
                for name in node.inputs {
                    if let constant = constants[name] {
                        if constant.count == outputRank, let first = constant.first, first != 1 { return false }
                    } else if (shapes[name]?.shape.count ?? 0) != outputRank {
                        return false  // a lower-rank activation would broadcast across the batch axis
                    }
                }
            default:
                return false
            }
        }
        return true
    }
}
