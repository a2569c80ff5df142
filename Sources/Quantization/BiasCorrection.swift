import Datasets
import Foundation
import Graph
import Inference
import Tensor

/// What bias correction did to one quantized Conv/Gemm.
public struct BiasCorrectionReport: Sendable {
    public let node: String
    /// Mean and largest |correction| over the output channels, in the layer's output units.
    public let meanAbsoluteCorrection: Double
    public let maxAbsoluteCorrection: Double
    /// Root mean square of the float layer's output on the correction images (the scale to read the corrections against).
    public let outputRMS: Double
}

/// Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", §4.2; Finkelstein et al. 2019).
///
/// Quantizing weights and inputs shifts the mean of a layer's output (rounding and clipping errors do not average
/// out per channel), and the shift travels down the network. For each quantized Conv/Gemm in graph order, the
/// per-output-channel mean of (float output − simulated quantized output) over the correction images is added to
/// the layer's int32 bias (rounded to its grid `s_in · s_w[c]`). Outputs are compared before the activation
/// (ReLU/clamp), where the bias acts.
///
/// Each layer is measured in the QDQ graph with every earlier correction applied. Whole-network passes would
/// cost one pass per layer (O(layers²) node evaluations); instead the QDQ graph runs once, in segments that end
/// at a corrected layer: the values later segments read are kept for all correction images, and the corrected
/// layer runs a second time with its new int32 bias, so what later layers read is bit for bit what the final
/// QDQ graph computes (a shift of the output by the bias change would differ in the last bits, and a grid
/// downstream turns such differences into whole rounding steps now and then). The float targets come from one
/// pass of the float graph.
struct BiasCorrection {
    /// The float model the QDQ graph approximates (BN folded): the target means. After BN re-estimation the QDQ
    /// graph was built from another float graph (other statistics folded in), but the target stays the model as given.
    let reference: Graph
    /// The quantized Conv/Gemm nodes.
    let layers: [String]

    /// `graph` with a zero bias on every node of `layers` that has none, so that each can take a correction.
    static func withExplicitBiases(_ graph: Graph, layers: [String]) throws -> Graph {
        var result = graph
        let names = Set(layers)
        for index in result.nodes.indices where names.contains(result.nodes[index].name) {
            let node = result.nodes[index]
            guard node.inputs.count < 3 || node.inputs[2].isEmpty else { continue }
            guard node.inputs.count > 1, let weight = graph.initializers[node.inputs[1]], weight.shape.count >= 2 else {
                throw QuantizationError("bias correction: node '\(node.name)' has no weight initializer")
            }
            // Conv weights are [O, I/g, kh, kw]; Gemm's B is [N, K] with transB = 1, else [K, N].
            let channels = node.op == .gemm && node.int("transB", default: 0) == 0 ? weight.shape[1] : weight.shape[0]
            var name = node.name + "::bias"
            while result.initializers[name] != nil || result.nodes.contains(where: { $0.outputs.contains(name) }) { name += "_" }
            result.initializers[name] = Initializer(name: name, shape: [channels], storage: .float32([Float](repeating: 0, count: channels)))
            if result.nodes[index].inputs.count > 2 { result.nodes[index].inputs[2] = name } else { result.nodes[index].inputs.append(name) }
        }
        return result
    }

    /// Corrects the int32 biases of `layers` in `quantized` (a QDQ graph of `reference`'s structure) on `images`.
    func apply(to quantized: inout Graph, images: LabeledImages, batch: Int,
               progress: (String, Int, Int) -> Void) throws -> [BiasCorrectionReport] {
        guard let input = quantized.inputs.first, quantized.inputs.count == 1, images.count > 0 else {
            throw QuantizationError("bias correction needs a model with one input and at least one image")
        }
        let nodeIndex = Dictionary(quantized.nodes.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { first, _ in first })
        let ends = try layers.map { name -> Int in
            guard let index = nodeIndex[name] else { throw QuantizationError("bias correction: no node '\(name)' in the quantized graph") }
            return index
        }.sorted()
        let floatOutputs = try ends.map { end -> String in
            let name = quantized.nodes[end].name
            guard let node = reference.nodes.first(where: { $0.name == name }) else {
                throw QuantizationError("bias correction: no node '\(name)' in the float graph")
            }
            return node.outputs[0]
        }
        let targets = try Self.channelStatistics(of: floatOutputs, in: reference, images: images, batch: min(batch, 32))

        // The QDQ graph in segments; `live` holds, for all images, the values later segments read.
        let shapes = try quantized.validated().valueInfo
        var lastReader: [String: Int] = [:]
        for (index, node) in quantized.nodes.enumerated() { for name in node.inputs where !name.isEmpty { lastReader[name] = index } }
        let graphOutputs = Set(quantized.outputs.map(\.name))
        var live: [String: Tensor] = [input.name: Tensor(shape: [images.count, images.channels, images.height, images.width],
                                                          data: images.batch(0..<images.count).pixels)]
        /// Runs `nodes` of the QDQ graph (in graph order) on the live values and adds to them what the nodes compute
        /// that a node after index `last`, or the caller (`extra`), reads.
        func run(_ nodes: [Node], last: Int, extra: [String] = []) throws {
            guard !nodes.isEmpty else { return }
            let produced = Set(nodes.flatMap(\.outputs))
            var reads: [String] = []
            for name in nodes.flatMap(\.inputs) where !name.isEmpty && !produced.contains(name)
                && quantized.initializers[name] == nil && !reads.contains(name) { reads.append(name) }
            let kept = produced.filter { (lastReader[$0] ?? -1) > last || graphOutputs.contains($0) }.union(extra).sorted()
            func info(_ name: String) throws -> ValueInfo {
                if let declared = quantized.inputs.first(where: { $0.name == name }) ?? shapes[name] { return declared }
                throw QuantizationError("bias correction: no shape for '\(name)'")
            }
            var initializers: [String: Initializer] = [:]
            for name in nodes.flatMap(\.inputs) { if let value = quantized.initializers[name] { initializers[name] = value } }
            let part = Graph(name: quantized.name, inputs: try reads.map(info), outputs: try kept.map(info), nodes: nodes,
                             initializers: initializers)
            let results = try FloatExecutor(graph: part).run(try Dictionary(uniqueKeysWithValues: reads.map { name in
                guard let value = live[name] else { throw QuantizationError("bias correction: '\(name)' was not computed before it is read") }
                return (name, value)
            }))
            live.merge(results) { _, new in new }
        }

        var reports: [BiasCorrectionReport] = []
        var start = 0
        for (layer, end) in ends.enumerated() {
            // The layer: the Conv/Gemm and the DequantizeLinear nodes of its weight and bias. It runs twice, before
            // and after its correction, so the kept output is exactly what the corrected QDQ graph computes.
            let node = quantized.nodes[end], output = node.outputs[0]
            let constants = Set(node.inputs.dropFirst())
            var layerNodes: [Node] = [], others: [Node] = []
            for index in start...end {
                let candidate = quantized.nodes[index]
                let dequantizesConstant = candidate.op == .dequantizeLinear && candidate.outputs.contains { constants.contains($0) }
                    && candidate.inputs.allSatisfy { quantized.initializers[$0] != nil }
                if index == end || dequantizesConstant { layerNodes.append(candidate) } else { others.append(candidate) }
            }
            try run(others, last: end - 1)
            try run(layerNodes, last: end, extra: [output])
            guard let simulated = live[output] else { throw QuantizationError("bias correction: '\(output)' was not computed") }

            let target = targets[layer]
            let correction = zip(target.means, Self.channelMeans(simulated)).map { $0 - $1 }
            try correctBias(of: node, by: correction, in: &quantized)
            try run(layerNodes, last: end, extra: [output])  // with the corrected bias
            live = live.filter { name, _ in (lastReader[name] ?? -1) > end || graphOutputs.contains(name) }

            let magnitudes = correction.map(abs)
            reports.append(BiasCorrectionReport(node: node.name,
                                                meanAbsoluteCorrection: magnitudes.reduce(0, +) / Double(max(1, magnitudes.count)),
                                                maxAbsoluteCorrection: magnitudes.max() ?? 0, outputRMS: target.rms))
            start = end + 1
            progress("bias correction", layer + 1, ends.count)
        }
        return reports
    }

    /// Moves the node's int32 bias (QDQGraphBuilder's names: `bias::q`, scale `bias::q.scale` = `s_in · s_w[c]`) by
    /// `correction`, rounded to whole codes. The correction is added to the *dequantized* bias the measurement
    /// saw, not re-rounded from the float bias: that would add the original rounding error back, leaving up to a
    /// whole code of mean error instead of half of one.
    private func correctBias(of node: Node, by correction: [Double], in quantized: inout Graph) throws {
        guard node.inputs.count > 2, !node.inputs[2].isEmpty else {
            throw QuantizationError("bias correction: node '\(node.name)' has no bias")
        }
        let codesName = node.inputs[2] + "::q"
        guard let codes = quantized.initializers[codesName], case .int32(let oldCodes) = codes.storage,
              case .float32(let scales)? = quantized.initializers[codesName + ".scale"]?.storage,
              oldCodes.count == correction.count, scales.count == correction.count else {
            throw QuantizationError("bias correction: node '\(node.name)': bias '\(node.inputs[2])' is not a quantized int32 bias with \(correction.count) channels")
        }
        let newCodes = (0..<correction.count).map { c in
            Int32(clamping: Int(oldCodes[c]) + Int((correction[c] / Double(scales[c])).rounded(.toNearestOrEven)))
        }
        quantized.initializers[codesName] = Initializer(name: codesName, shape: codes.shape, storage: .int32(newCodes))
    }

    /// Per-channel (dimension 1) means of a tensor.
    private static func channelMeans(_ tensor: Tensor) -> [Double] {
        let (sums, _, count) = channelSums(tensor)
        return sums.map { $0 / Double(max(1, count)) }
    }

    /// Per-channel sums, the total of squares, and the number of values per channel.
    private static func channelSums(_ tensor: Tensor) -> (sums: [Double], squares: Double, perChannel: Int) {
        let batch = tensor.shape[0], channels = tensor.shape.count > 1 ? tensor.shape[1] : 1
        let plane = tensor.shape.dropFirst(2).reduce(1, *)
        var sums = [Double](repeating: 0, count: channels), squares = 0.0
        tensor.data.withUnsafeBufferPointer { values in
            for image in 0..<batch {
                for c in 0..<channels {
                    let base = (image * channels + c) * plane
                    var sum = 0.0
                    for i in base..<(base + plane) {
                        let x = Double(values[i])
                        sum += x
                        squares += x * x
                    }
                    sums[c] += sum
                }
            }
        }
        return (sums, squares, batch * plane)
    }

    /// Per-channel means and the RMS of each named value of the float graph over `images` (one pass).
    private static func channelStatistics(of names: [String], in graph: Graph, images: LabeledImages,
                                          batch: Int) throws -> [(means: [Double], rms: Double)] {
        guard let input = graph.inputs.first else { throw QuantizationError("the model has no input") }
        let probe = try FloatExecutor(graph: PostTrainingQuantizer.exposing(names, in: graph))
        var sums: [[Double]] = names.map { _ in [] }, squares = [Double](repeating: 0, count: names.count)
        var counts = [Int](repeating: 0, count: names.count)
        var pixels: [Float] = [], labels: [Int] = []
        for start in stride(from: 0, to: images.count, by: batch) {
            let range = start..<min(start + batch, images.count)
            images.copyBatch(range, pixels: &pixels, labels: &labels)
            let outputs = try probe.run([input.name: Tensor(shape: [range.count, images.channels, images.height, images.width], data: pixels)])
            for (index, name) in names.enumerated() {
                guard let value = outputs[name] else { throw QuantizationError("bias correction: '\(name)' was not computed") }
                let (channelSums, squareSum, perChannel) = channelSums(value)
                sums[index] = sums[index].isEmpty ? channelSums : zip(sums[index], channelSums).map { $0 + $1 }
                squares[index] += squareSum
                counts[index] += perChannel
            }
        }
        return names.indices.map { index in
            let count = Double(max(1, counts[index]))
            return (sums[index].map { $0 / count }, (squares[index] / (count * Double(max(1, sums[index].count)))).squareRoot())
        }
    }
}
