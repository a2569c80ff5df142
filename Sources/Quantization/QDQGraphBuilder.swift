import Foundation
import Graph

/// Rewrites a float graph into QDQ form given the grid of every quantization point.
/// Naming: a quantized tensor `t` keeps its name for the *dequantized* value, so consumers need no rewiring;
/// the float value the producer computes is renamed `t::float`, the uint8 value is `t::q`. Graph inputs keep
/// their name (they are what the user feeds), so their dequantized value is `t::dq` and consumers are rewired.
struct QDQGraphBuilder {
    let graph: Graph
    let plan: QDQPlan
    let grids: [String: AffineQuantization]
    let config: QuantizationConfig
    /// Per quantization point, bits other than `config.activationBits` (QAT keeps the first/last layer at 8).
    var activationBitsOverride: [String: Int] = [:]
    /// Per node name, weight bits other than `config.weightBits`.
    var weightBitsOverride: [String: Int] = [:]
    /// Per node name, the per-channel weight scales to use instead of choosing them with `config.weightCalibration`
    /// (QAT exports the scales it trained with).
    var weightScales: [String: [Float]] = [:]
    /// Extra entries for the `qatflow.quantization` metadata (e.g. how QAT was run).
    var metadataExtras: [String: Any] = [:]

    func build() throws -> Graph {
        var result = graph
        var nodes: [Node] = []
        var initializers = graph.initializers
        let points = Set(plan.quantizationPoints)
        let quantizedNodes = Set(plan.quantizedNodes)
        var renamedInputs: [String: String] = [:]

        for input in graph.inputs where points.contains(input.name) {
            let grid = grids[input.name]!
            nodes += activationPair(point: input.name, source: input.name, quantized: input.name + "::q", dequantized: input.name + "::dq", grid: grid, initializers: &initializers)
            renamedInputs[input.name] = input.name + "::dq"
        }

        for var node in graph.nodes {
            // Weight and bias grids depend on the input's grid, looked up under the input's original name.
            if quantizedNodes.contains(node.name) && (node.op == .conv || node.op == .gemm) {
                nodes += try weightNodes(for: node, initializers: &initializers)
            }
            node.inputs = node.inputs.map { renamedInputs[$0] ?? $0 }
            let quantizedOutputs = node.outputs.filter { points.contains($0) }
            node.outputs = node.outputs.map { points.contains($0) ? $0 + "::float" : $0 }
            nodes.append(node)
            for output in quantizedOutputs {
                nodes += activationPair(point: output, source: output + "::float", quantized: output + "::q", dequantized: output, grid: grids[output]!, initializers: &initializers)
            }
        }
        result.nodes = nodes
        result.initializers = initializers
        result.valueInfo = [:]
        result.metadata["qatflow.quantization"] = metadata()
        return try result.validated()
    }

    private func activationPair(point: String, source: String, quantized: String, dequantized: String, grid: AffineQuantization,
                                initializers: inout [String: Initializer]) -> [Node] {
        let scale = quantized + ".scale", zeroPoint = quantized + ".zero_point"
        initializers[scale] = Initializer(name: scale, shape: [], storage: .float32([grid.scale]))
        initializers[zeroPoint] = Initializer(name: zeroPoint, shape: [], storage: .uint8([UInt8(grid.zeroPoint)]))
        let bits: [String: AttributeValue] = ["bits": .int(activationBitsOverride[point] ?? config.activationBits)]
        return [
            Node(name: quantized + "/QuantizeLinear", op: .quantizeLinear, inputs: [source, scale, zeroPoint], outputs: [quantized], attributes: bits),
            Node(name: quantized + "/DequantizeLinear", op: .dequantizeLinear, inputs: [quantized, scale, zeroPoint], outputs: [dequantized], attributes: bits),
        ]
    }

    /// Replaces the node's float weight and bias initializers by int8/int32 initializers + DequantizeLinear
    /// nodes that produce tensors of the original names.
    private func weightNodes(for node: Node, initializers: inout [String: Initializer]) throws -> [Node] {
        let weightName = node.inputs[1]
        guard let weight = initializers[weightName], case .float32(let values) = weight.storage else {
            throw QuantizationError("node '\(node.name)': weight '\(weightName)' is not a float initializer")
        }
        // Output channels: Conv [O, I/g, kh, kw] → axis 0; Gemm B is [N, K] with transB = 1, else [K, N] → axis 1.
        let channelsLast = node.op == .gemm && node.int("transB", default: 0) == 0
        let axis = channelsLast ? 1 : 0
        let channels = weight.shape[axis]
        let inputBits = activationBitsOverride[node.inputs[0]] ?? config.activationBits
        let bits = config.target.weightBits(requested: weightBitsOverride[node.name] ?? config.weightBits, inputActivationBits: inputBits)
        let qmax = (1 << (bits - 1)) - 1
        guard values.allSatisfy(\.isFinite) else {
            throw QuantizationError("node '\(node.name)': weight '\(weightName)' has values that are NaN or infinite (did training diverge?)")
        }
        var scales: [Float]
        if let trained = weightScales[node.name] {
            guard trained.count == channels else {
                throw QuantizationError("node '\(node.name)': \(trained.count) weight scales for \(channels) output channels")
            }
            scales = trained
        } else {
            scales = WeightQuantizer.grids(values, channels: channels, channelsLast: channelsLast, bits: bits,
                                           method: config.weightCalibration).map(\.scale)
        }

        // The bias is stored as int32 on the grid s_in·s_w[c]. A channel whose weights are all but zero (Adam's
        // weight decay drives a dead channel's weights geometrically towards 0, into denormals) has a grid too
        // fine for its bias: bias / (s_in·s_w) would not fit in 32 bits. Such a channel's weight scale grows
        // until the bias fits in 2^30 codes (leaving the other half of int32 to the products); its weights are
        // then too small to matter next to the bias, and the few that round to other codes change the output
        // by far less than one output step.
        var bias: (name: String, values: [Float], inputScale: Float)?
        if node.inputs.count > 2, !node.inputs[2].isEmpty {
            let biasName = node.inputs[2]
            guard let initializer = initializers[biasName], case .float32(let biasValues) = initializer.storage, biasValues.count == channels else {
                throw QuantizationError("node '\(node.name)': bias '\(biasName)' must be a float initializer with \(channels) values")
            }
            guard biasValues.allSatisfy(\.isFinite) else {
                throw QuantizationError("node '\(node.name)': bias '\(biasName)' has values that are NaN or infinite (did training diverge?)")
            }
            guard let inputGrid = grids[node.inputs[0]] else {
                throw QuantizationError("node '\(node.name)': input '\(node.inputs[0])' has no quantization grid")
            }
            bias = (biasName, biasValues, inputGrid.scale)
            let largestBiasCode = Float(1 << 30)
            for c in 0..<channels {
                scales[c] = max(scales[c], abs(biasValues[c]) / (inputGrid.scale * largestBiasCode))
            }
        }
        let weightGrids = scales.map { AffineQuantization(scale: $0, zeroPoint: 0, qmin: -qmax, qmax: qmax) }
        let quantized = WeightQuantizer.quantize(values, grids: weightGrids, channelsLast: channelsLast)
        let quantizedName = weightName + "::q"
        initializers.removeValue(forKey: weightName)
        initializers[quantizedName] = Initializer(name: quantizedName, shape: weight.shape, storage: .int8(quantized))
        initializers[quantizedName + ".scale"] = Initializer(name: quantizedName + ".scale", shape: [channels], storage: .float32(scales))
        initializers[quantizedName + ".zero_point"] = Initializer(name: quantizedName + ".zero_point", shape: [channels], storage: .int8(Array(repeating: 0, count: channels)))
        var nodes = [Node(name: quantizedName + "/DequantizeLinear", op: .dequantizeLinear,
                          inputs: [quantizedName, quantizedName + ".scale", quantizedName + ".zero_point"], outputs: [weightName],
                          attributes: ["axis": .int(axis), "bits": .int(bits)])]

        if let (biasName, biasValues, inputScale) = bias {
            let biasScales = scales.map { $0 * inputScale }
            let quantizedBias = zip(biasValues, biasScales).map { value, scale in
                Int32(clamping: Int((value / scale).rounded(.toNearestOrEven)))
            }
            let biasQuantizedName = biasName + "::q"
            initializers.removeValue(forKey: biasName)
            initializers[biasQuantizedName] = Initializer(name: biasQuantizedName, shape: [channels], storage: .int32(quantizedBias))
            initializers[biasQuantizedName + ".scale"] = Initializer(name: biasQuantizedName + ".scale", shape: [channels], storage: .float32(biasScales))
            initializers[biasQuantizedName + ".zero_point"] = Initializer(name: biasQuantizedName + ".zero_point", shape: [channels], storage: .int32(Array(repeating: 0, count: channels)))
            nodes.append(Node(name: biasQuantizedName + "/DequantizeLinear", op: .dequantizeLinear,
                              inputs: [biasQuantizedName, biasQuantizedName + ".scale", biasQuantizedName + ".zero_point"],
                              outputs: [biasName], attributes: ["axis": .int(0)]))
        }
        return nodes
    }

    private func metadata() -> String {
        var object: [String: Any] = [
            "scheme": "weights symmetric per-channel int8 narrow range; activations asymmetric per-tensor uint8; bias int32",
            "weight_bits": config.weightBits,
            "activation_bits": config.activationBits,
            "activation_method": config.activationCalibration.name,
            "weight_method": config.weightCalibration.rawValue,
            "quantized_node_count": plan.quantizedNodes.count,
            "skip": config.skip,
            "target": config.target.rawValue,
        ]
        if !weightBitsOverride.isEmpty { object["weight_bits_by_node"] = weightBitsOverride }
        if !activationBitsOverride.isEmpty { object["activation_bits_by_tensor"] = activationBitsOverride }
        for (key, value) in metadataExtras { object[key] = value }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
