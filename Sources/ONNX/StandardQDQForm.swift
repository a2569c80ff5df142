import Graph

/// Rewrites a qatflow QDQ graph (docs/quantization.md) into the QDQ form that standard ONNX consumers (ONNX Runtime
/// and the like) accept, computing the same function:
/// - the qatflow-only `bits` attribute is dropped from QuantizeLinear/DequantizeLinear (ONNX Runtime rejects
///   unknown attributes);
/// - a QuantizeLinear with `bits` < 8 saturates to a narrower range than ONNX's QuantizeLinear does, so an integer
///   Clip to `[0, 2^bits − 1]` (uint8) or `[−(2^(bits−1) − 1), 2^(bits−1) − 1]` (int8) follows it. Clipping the
///   integers is exact, where a float Clip before the quantizer would depend on rounding at the range's ends, and it
///   leaves the DQ → Conv → Q groups intact for ONNX Runtime to fuse;
/// - DequantizeLinear of constants (weights, biases) is unchanged: sub-8-bit values are already in their range;
/// - one-element scales and zero points become scalars (the ONNX form of per-tensor parameters), and int32 zero
///   points (biases) must be 0, as ONNX requires.
/// Per-axis parameters (per-channel weights) need opset 13, the exporter's lowest.
enum StandardQDQForm {
    static func rewrite(_ graph: Graph) throws -> Graph {
        let types: [String: ValueInfo]
        do {
            types = try ShapeInference.infer(graph)
        } catch {
            throw ONNXExportError("'\(graph.name)' is not a valid graph: \(error)")
        }
        var result = graph
        var nodes: [Node] = []
        nodes.reserveCapacity(graph.nodes.count)
        var takenNames = Set(graph.initializers.keys)
        takenNames.formUnion(graph.inputs.map(\.name))
        for node in graph.nodes { takenNames.formUnion(node.outputs) }

        for var node in graph.nodes {
            guard node.op == .quantizeLinear || node.op == .dequantizeLinear else {
                nodes.append(node)
                continue
            }
            let bits = node.attributes.removeValue(forKey: "bits")?.int ?? 8
            guard (2...8).contains(bits) else {
                throw ONNXExportError("node '\(node.name)' (\(node.op.rawValue)): bits \(bits) is outside 2–8")
            }
            for index in 1..<node.inputs.count where !node.inputs[index].isEmpty {
                makeScalarIfSingleValue(node.inputs[index], in: &result)
            }
            if node.op == .dequantizeLinear, types[node.inputs[0]]?.dataType == .int32 {
                try requireZeroZeroPoint(node, graph)
            }
            guard node.op == .quantizeLinear, bits < 8 else {
                nodes.append(node)
                continue
            }
            // ONNX saturates to the full 8-bit range; the narrower qatflow range is restored by an integer Clip that
            // produces the quantizer's original output name, so consumers need no rewiring.
            let quantizedType = types[node.outputs[0]]?.dataType ?? .uint8
            let range = Self.range(bits: bits, type: quantizedType)
            let clipped = node.outputs[0]
            let unclipped = uniqueName(clipped + "::8bit", taken: &takenNames)
            node.outputs[0] = unclipped
            nodes.append(node)
            nodes.append(Node(name: uniqueName(node.name + "/Clip", taken: &takenNames), op: .clip, inputs: [unclipped],
                              outputs: [clipped], attributes: ["min": .float(range.lowerBound), "max": .float(range.upperBound)]))
        }
        result.nodes = nodes
        return result
    }

    /// The quantized range qatflow's `bits` selects (docs/quantization.md).
    static func range(bits: Int, type: DataType) -> ClosedRange<Float> {
        if type == .int8 {
            let high = Float((1 << (bits - 1)) - 1)
            return -high...high
        }
        return 0...Float((1 << bits) - 1)
    }

    /// ONNX states per-tensor parameters as scalars; a `[1]` or `[1, 1]` initializer would read as per-axis.
    private static func makeScalarIfSingleValue(_ name: String, in graph: inout Graph) {
        guard var initializer = graph.initializers[name], initializer.storage.count == 1, !initializer.shape.isEmpty else { return }
        initializer.shape = []
        graph.initializers[name] = initializer
    }

    private static func requireZeroZeroPoint(_ node: Node, _ graph: Graph) throws {
        guard node.inputs.count > 2, !node.inputs[2].isEmpty, let zeroPoint = graph.initializers[node.inputs[2]] else { return }
        guard zeroPoint.storage.floats.allSatisfy({ $0 == 0 }) else {
            throw ONNXExportError("node '\(node.name)' (DequantizeLinear of int32 '\(node.inputs[0])'): zero point must be 0, as ONNX requires for int32")
        }
    }

    private static func uniqueName(_ proposed: String, taken: inout Set<String>) -> String {
        var name = proposed
        var suffix = 1
        while taken.contains(name) {
            name = "\(proposed)_\(suffix)"
            suffix += 1
        }
        taken.insert(name)
        return name
    }
}
