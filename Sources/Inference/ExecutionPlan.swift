import Graph
import Tensor

/// One operator call of a run: one node, or a Conv with the BatchNormalization and Relu/Clip that follow it fused
/// in (the BN folded into the weights at prepare time, the clamp applied where the convolution stores its output),
/// which saves two full passes over the activation per fused layer.
struct ExecutionStep: Sendable {
    let implementation: FloatOperator
    /// The node errors are reported against (the Conv of a fused step).
    let node: Node
    let inputs: [String]
    let outputs: [String]
    /// Row of the profile (`QATFLOW_PROFILE=1`).
    let label: String
}

/// Turns a validated graph into `ExecutionStep`s, fusing Conv → [BatchNormalization] → [Relu | Clip] chains when each
/// intermediate value has that one reader, is not a graph output, and the BN parameters are initializers.
enum ExecutionPlanner {
    static func plan(_ graph: Graph, shapes: [String: ValueInfo]) throws -> [ExecutionStep] {
        var readers: [String: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() {
            for name in Set(node.inputs) where !name.isEmpty { readers[name, default: []].append(index) }
        }
        let graphOutputs = Set(graph.outputs.map(\.name))
        /// The one node reading `value`, if exactly one does and the value is not a graph output.
        func soleReader(of value: String) -> Int? {
            guard !graphOutputs.contains(value), let list = readers[value], list.count == 1 else { return nil }
            return list[0]
        }
        func isInitializer(_ name: String) -> Bool { graph.initializers[name] != nil }

        var fusedAway = Set<Int>()
        var steps: [ExecutionStep] = []
        for (index, node) in graph.nodes.enumerated() where !fusedAway.contains(index) {
            do {
                if node.op == .conv, node.outputs.count == 1, let weights = node.inputs.count > 1 ? graph.initializers[node.inputs[1]] : nil {
                    var output = node.outputs[0]
                    var batchNormalization: BatchNormalizationOperator?
                    var clamp: (minimum: Float, maximum: Float)?
                    if let next = soleReader(of: output), graph.nodes[next].op == .batchNormalization {
                        let bn = graph.nodes[next]
                        if bn.inputs.count == 5, bn.inputs[0] == output, bn.outputs.count == 1,
                           bn.inputs[1...4].allSatisfy(isInitializer) {
                            let parameter = { (i: Int) in graph.initializers[bn.inputs[i]]!.storage.floats }
                            batchNormalization = BatchNormalizationOperator(
                                scale: parameter(1), offset: parameter(2), mean: parameter(3), variance: parameter(4),
                                epsilon: bn.float("epsilon", default: 1e-5))
                            fusedAway.insert(next)
                            output = bn.outputs[0]
                        }
                    }
                    if let next = soleReader(of: output) {
                        let activation = graph.nodes[next]
                        let singleInput = activation.inputs.filter { !$0.isEmpty } == [output] && activation.outputs.count == 1
                        if singleInput && activation.op == .relu {
                            clamp = (0, .infinity)
                        } else if singleInput && activation.op == .clip {
                            clamp = (activation.float("min", default: -.infinity), activation.float("max", default: .infinity))
                        }
                        if clamp != nil {
                            fusedAway.insert(next)
                            output = activation.outputs[0]
                        }
                    }
                    let bias = node.inputs.count > 2 ? graph.initializers[node.inputs[2]]?.storage.floats : nil
                    let convolution = try ConvolutionOperator(
                        node: node, weights: weights, bias: bias,
                        batchNormalization: batchNormalization.map { ($0.multiplier, $0.shift) }, clamp: clamp)
                    steps.append(ExecutionStep(implementation: convolution, node: node, inputs: node.inputs,
                                               outputs: [output], label: convolution.profileLabel))
                    continue
                }
                if node.op == .quantizeLinear, let next = soleReader(of: node.outputs[0]),
                   isFakeQuantizationPair(node, graph.nodes[next], in: graph),
                   var pair = try FloatOperatorFactory.make(node, graph: graph, shapes: shapes) as? AffineQuantizationOperator {
                    pair.mode = .quantizeDequantize
                    fusedAway.insert(next)
                    steps.append(ExecutionStep(implementation: pair, node: node, inputs: node.inputs,
                                               outputs: graph.nodes[next].outputs, label: "QuantizeLinear+DequantizeLinear"))
                    continue
                }
                let implementation = try FloatOperatorFactory.make(node, graph: graph, shapes: shapes)
                steps.append(ExecutionStep(implementation: implementation, node: node, inputs: node.inputs,
                                           outputs: node.outputs, label: node.op.rawValue))
            } catch let failure as OperatorFailure {
                throw FloatExecutorError(nodeName: node.name, op: node.op, message: failure.message)
            }
        }
        return steps
    }

    /// A per-tensor QuantizeLinear whose output only a DequantizeLinear with the same grid reads: one fake
    /// quantization pass gives bit-identical values (the integers in between are exact in Float).
    static func isFakeQuantizationPair(_ quantize: Node, _ dequantize: Node, in graph: Graph) -> Bool {
        guard dequantize.op == .dequantizeLinear, dequantize.inputs.first == quantize.outputs[0], dequantize.outputs.count == 1,
              quantize.outputs.count == 1, graph.initializers[quantize.inputs[0]] == nil,
              quantize.inputs.count > 1, dequantize.inputs.count > 1,
              let scale = graph.initializers[quantize.inputs[1]], scale.storage.count == 1,
              let otherScale = graph.initializers[dequantize.inputs[1]], otherScale.storage.floats == scale.storage.floats
        else { return false }
        func zeroPoint(_ node: Node) -> (DataType, [Float])? {
            guard node.inputs.count > 2, !node.inputs[2].isEmpty else { return (.uint8, [0]) }
            return graph.initializers[node.inputs[2]].map { ($0.storage.dataType, $0.storage.floats) }
        }
        guard let a = zeroPoint(quantize), let b = zeroPoint(dequantize) else { return false }
        return a.0 == b.0 && a.1 == b.1
    }
}
