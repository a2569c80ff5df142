/// Graph-to-graph rewrites that keep the function the graph computes (up to float rounding).
public enum GraphTransforms {
    /// Folds every `Conv → BatchNormalization` pair into one Conv: with `s = scale / √(var + ε)`,
    /// `W'[o] = W[o]·s[o]` and `b'[o] = (b[o] − mean[o])·s[o] + B[o]`. The Conv then writes the BN's output name.
    ///
    /// A BN stays as it is when its input is not produced by a Conv, when that Conv output has another consumer or
    /// is a graph output (the un-normalised value is still needed), or when weights/statistics are not float32
    /// initializers. Weights shared with another node are copied under a new name instead of being changed.
    public static func foldBatchNormalization(_ graph: Graph) throws -> Graph {
        var result = graph
        var consumers: [String: Int] = [:]
        for node in graph.nodes { for name in node.inputs where !name.isEmpty { consumers[name, default: 0] += 1 } }
        let graphOutputs = Set(graph.outputs.map(\.name))
        var producerIndex: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() { for name in node.outputs where !name.isEmpty { producerIndex[name] = index } }

        var removed = Set<Int>()
        /// Initializers that folding may have left without readers (BN statistics, replaced conv weights).
        var orphanCandidates = Set<String>()
        for (bnIndex, bn) in graph.nodes.enumerated() where bn.op == .batchNormalization {
            guard bn.inputs.count == 5, bn.outputs.count >= 1, bn.outputs.dropFirst().allSatisfy(\.isEmpty),
                  let convIndex = producerIndex[bn.inputs[0]], !removed.contains(convIndex) else { continue }
            let conv = result.nodes[convIndex]
            let convOutput = bn.inputs[0]
            guard conv.op == .conv, consumers[convOutput] == 1, !graphOutputs.contains(convOutput),
                  let weights = result.initializers[conv.inputs[1]], case .float32(var weightValues) = weights.storage,
                  weights.shape.count == 4 else { continue }
            let statistics = bn.inputs[1...4].map { result.initializers[$0] }
            guard statistics.allSatisfy({ $0?.storage.dataType == .float32 }) else { continue }
            let (scale, offset, mean, variance) = (statistics[0]!.storage.floats, statistics[1]!.storage.floats,
                                                   statistics[2]!.storage.floats, statistics[3]!.storage.floats)
            let outChannels = weights.shape[0]
            guard [scale, offset, mean, variance].allSatisfy({ $0.count == outChannels }) else {
                throw GraphValidationError(node: bn, "BN parameters must have \(outChannels) values to fold into Conv '\(conv.name)'")
            }
            let epsilon = bn.float("epsilon", default: 1e-5)
            let hasBias = conv.inputs.count > 2 && !conv.inputs[2].isEmpty
            var biasValues = [Float](repeating: 0, count: outChannels)
            if hasBias {
                guard let bias = result.initializers[conv.inputs[2]], bias.storage.dataType == .float32 else { continue }
                biasValues = bias.storage.floats
            }
            let perChannel = weightValues.count / outChannels
            for o in 0..<outChannels {
                let factor = scale[o] / (variance[o] + epsilon).squareRoot()
                for i in (o * perChannel)..<((o + 1) * perChannel) { weightValues[i] *= factor }
                biasValues[o] = (biasValues[o] - mean[o]) * factor + offset[o]
            }

            var folded = conv
            let weightName = exclusiveName(conv.inputs[1], consumers: consumers, in: result, fallback: "\(conv.name).weight_folded")
            result.initializers[weightName] = Initializer(name: weightName, shape: weights.shape, storage: .float32(weightValues))
            folded.inputs[1] = weightName
            let biasName = hasBias
                ? exclusiveName(conv.inputs[2], consumers: consumers, in: result, fallback: "\(conv.name).bias_folded")
                : uniqueName("\(conv.name).bias_folded", in: result)
            result.initializers[biasName] = Initializer(name: biasName, shape: [outChannels], storage: .float32(biasValues))
            if folded.inputs.count > 2 { folded.inputs[2] = biasName } else { folded.inputs.append(biasName) }
            orphanCandidates.formUnion(conv.inputs.dropFirst().filter { !$0.isEmpty })
            orphanCandidates.formUnion(bn.inputs.dropFirst())
            folded.outputs[0] = bn.outputs[0]
            result.nodes[convIndex] = folded
            result.valueInfo[convOutput] = nil
            removed.insert(bnIndex)
            for name in bn.inputs[1...4] { consumers[name, default: 1] -= 1 }
        }
        result.nodes = result.nodes.enumerated().filter { !removed.contains($0.offset) }.map(\.element)
        removeUnreferencedInitializers(&result, candidates: orphanCandidates)
        return result
    }

    /// Removes Identity nodes and Dropout nodes (inference form: Dropout is the identity) by rewiring consumers to
    /// the node's input. When the removed node's output is a graph output, the producer of its input is renamed to
    /// write the graph output instead; if that is impossible (the input is a graph input, an initializer or itself a
    /// graph output) the node is kept.
    public static func removeIdentitiesAndDropout(_ graph: Graph) -> Graph {
        var result = graph
        let graphOutputs = Set(graph.outputs.map(\.name))
        var index = 0
        while index < result.nodes.count {
            let node = result.nodes[index]
            guard node.op == .identity || node.op == .dropout, let input = node.inputs.first, !input.isEmpty,
                  let output = node.outputs.first, !output.isEmpty, node.outputs.dropFirst().allSatisfy(\.isEmpty) else {
                index += 1
                continue
            }
            if !graphOutputs.contains(output) {
                rename(output, to: input, in: &result, renameProducers: false)
            } else if result.nodes.contains(where: { $0.outputs.contains(input) }), !graphOutputs.contains(input) {
                rename(input, to: output, in: &result, renameProducers: true)
            } else {
                index += 1
                continue
            }
            result.nodes.remove(at: index)
            result.valueInfo[graphOutputs.contains(output) ? input : output] = nil
        }
        return result
    }

    /// Rewrites every reference to `old` as `new` (consumers' inputs; producers' outputs when asked).
    static func rename(_ old: String, to new: String, in graph: inout Graph, renameProducers: Bool) {
        for i in graph.nodes.indices {
            graph.nodes[i].inputs = graph.nodes[i].inputs.map { $0 == old ? new : $0 }
            if renameProducers { graph.nodes[i].outputs = graph.nodes[i].outputs.map { $0 == old ? new : $0 } }
        }
    }

    /// `name` itself when this node is its only consumer (safe to overwrite), otherwise a fresh name.
    static func exclusiveName(_ name: String, consumers: [String: Int], in graph: Graph, fallback: String) -> String {
        consumers[name] == 1 && !graph.outputs.contains(where: { $0.name == name }) ? name : uniqueName(fallback, in: graph)
    }

    static func uniqueName(_ base: String, in graph: Graph) -> String {
        var used = Set(graph.initializers.keys).union(graph.inputs.map(\.name)).union(graph.outputs.map(\.name))
        for node in graph.nodes { used.formUnion(node.outputs) }
        var candidate = base, suffix = 1
        while used.contains(candidate) { candidate = "\(base)_\(suffix)"; suffix += 1 }
        return candidate
    }

    /// Drops initializers among `candidates` that no node reads any more.
    static func removeUnreferencedInitializers(_ graph: inout Graph, candidates: Set<String>) {
        var referenced = Set(graph.outputs.map(\.name))
        for node in graph.nodes { referenced.formUnion(node.inputs) }
        for name in candidates where !referenced.contains(name) { graph.initializers[name] = nil }
    }
}
