import Graph

/// Whether a graph treats every image of a batch independently, so `FloatExecutor` may run a large batch as
/// several smaller ones. Why: at batch 32 every MobileNet activation is megabytes and each layer streams it
/// through L3; a few images at a time keep a layer's input and output in L2 (and two threads can take whole
/// chunks instead of meeting at every layer). Conservative: any operator that could mix images says no.
enum BatchSeparability {
    static func holds(for graph: Graph, shapes: [String: ValueInfo]) -> Bool {
        let produced = Set(graph.nodes.flatMap(\.outputs)).union(graph.inputs.map(\.name))
        guard graph.outputs.allSatisfy({ produced.contains($0.name) }) else { return false }
        for node in graph.nodes {
            switch node.op {
            case .conv, .batchNormalization, .relu, .clip, .globalAveragePool, .averagePool, .maxPool, .dropout,
                 .identity:
                continue
            case .quantizeLinear, .dequantizeLinear:
                if node.int("axis", default: 1) == 0 { return false }
            case .flatten:
                if node.int("axis", default: 1) < 1 { return false }
            case .softmax:
                if node.int("axis", default: -1) == 0 { return false }
            case .gemm:
                // Rows of A are images; B must be a constant (weights) and A must not be transposed.
                guard node.int("transA", default: 0) == 0, node.inputs.count > 1,
                      graph.initializers[node.inputs[1]] != nil else { return false }
                if node.inputs.count > 2, let bias = graph.initializers[node.inputs[2]], bias.shape.count == 2,
                   bias.shape[0] != 1 { return false }
            case .add, .mul:
                // A constant operand may broadcast over images, but must not have its own batch axis.
                let outputRank = shapes[node.outputs[0]]?.shape.count ?? 0
                for name in node.inputs {
                    if let constant = graph.initializers[name] {
                        if constant.shape.count == outputRank, let first = constant.shape.first, first != 1 { return false }
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
