extension GraphTransforms {
    /// Replaces every DequantizeLinear whose inputs are all initializers (quantized weights and biases of a QDQ
    /// model) by a float initializer holding the dequantized values: `(q − zero_point) · scale`, per tensor or
    /// per `axis`. Engines that want float weights (the float executor simulating a quantized model) then see an
    /// ordinary float graph around the activation Q/DQ pairs; the result is the same function.
    public static func foldConstantDequantization(_ graph: Graph) -> Graph {
        var result = graph
        var folded: Set<String> = []
        var kept: [Node] = []
        for node in graph.nodes {
            guard node.op == .dequantizeLinear,
                  let quantized = graph.initializers[node.inputs[0]],
                  node.inputs.count >= 2, let scale = graph.initializers[node.inputs[1]] else {
                kept.append(node)
                continue
            }
            let zeroPoint = node.inputs.count > 2 && !node.inputs[2].isEmpty ? graph.initializers[node.inputs[2]] : nil
            if node.inputs.count > 2 && !node.inputs[2].isEmpty && zeroPoint == nil { kept.append(node); continue }
            let values = quantized.storage.floats, scales = scale.storage.floats
            let zeroPoints = zeroPoint?.storage.floats ?? [Float](repeating: 0, count: scales.count)
            var output = [Float](repeating: 0, count: values.count)
            if scales.count == 1 {
                for i in values.indices { output[i] = (values[i] - zeroPoints[0]) * scales[0] }
            } else {
                let rank = quantized.shape.count
                var axis = node.int("axis", default: 1)
                if axis < 0 { axis += rank }
                let inner = quantized.shape[(axis + 1)...].reduce(1, *), length = quantized.shape[axis]
                for i in values.indices {
                    let channel = (i / inner) % length
                    output[i] = (values[i] - zeroPoints[channel]) * scales[channel]
                }
            }
            result.initializers[node.outputs[0]] = Initializer(name: node.outputs[0], shape: quantized.shape, storage: .float32(output))
            folded.formUnion(node.inputs)
        }
        result.nodes = kept
        removeUnreferencedInitializers(&result, candidates: folded)
        return result
    }
}
