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
/// the layer's float bias, which is then quantized to int32 again. Outputs are compared before the activation
/// (ReLU/clamp), where the bias acts.
///
/// Each layer is measured in the QDQ graph with every earlier correction applied. Whole-network passes would
/// cost one pass per layer (O(layers²) node evaluations); instead the QDQ graph runs once, in segments that end
/// at a corrected layer: the values later segments read are kept for all correction images, and the corrected
/// layer's output is shifted by its int32 bias change before the next segment reads it. The float targets come
/// from one pass of the float graph.
struct BiasCorrection {
    /// The float model the QDQ graph approximates (BN folded): the target means.
    let reference: Graph
    /// The float graph the QDQ graph was built from: its float biases are corrected. After BN re-estimation it
    /// differs from `reference` (other BN statistics were folded in); otherwise it is the same graph.
    let source: Graph
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

    /// Corrects the int32 biases of `layers` in `quantized` (a QDQ graph built from `source`) on `images`.
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
        var reports: [BiasCorrectionReport] = []
        var start = 0
        for (layer, end) in ends.enumerated() {
            let nodes = Array(quantized.nodes[start...end])
            let output = quantized.nodes[end].outputs[0]
            let produced = Set(nodes.flatMap(\.outputs))
            var reads: [String] = []
            for name in nodes.flatMap(\.inputs) where !name.isEmpty && !produced.contains(name)
                && quantized.initializers[name] == nil && !reads.contains(name) { reads.append(name) }
            let kept = produced.filter { (lastReader[$0] ?? -1) > end || graphOutputs.contains($0) }.union([output]).sorted()
            func info(_ name: String) throws -> ValueInfo {
                if let declared = quantized.inputs.first(where: { $0.name == name }) ?? shapes[name] { return declared }
                throw QuantizationError("bias correction: no shape for '\(name)'")
            }
            var initializers: [String: Initializer] = [:]
            for name in nodes.flatMap(\.inputs) { if let value = quantized.initializers[name] { initializers[name] = value } }
            let segment = Graph(name: "\(quantized.name) segment \(layer)", inputs: try reads.map(info), outputs: try kept.map(info),
                                nodes: nodes, initializers: initializers)
            var results = try FloatExecutor(graph: segment).run(try Dictionary(uniqueKeysWithValues: reads.map { name in
                guard let value = live[name] else { throw QuantizationError("bias correction: '\(name)' was not computed before it is read") }
                return (name, value)
            }))
            guard var simulated = results[output] else { throw QuantizationError("bias correction: '\(output)' was not computed") }

            let measured = Self.channelMeans(simulated)
            let target = targets[layer]
            let correction = zip(target.means, measured).map { $0 - $1 }
            let change = try correctBias(of: quantized.nodes[end], by: correction, in: &quantized)
            Self.shift(&simulated, byChannel: change)
            results[output] = simulated

            live.merge(results) { _, new in new }
            live = live.filter { name, _ in (lastReader[name] ?? -1) > end || graphOutputs.contains(name) }
            let magnitudes = correction.map(abs)
            reports.append(BiasCorrectionReport(node: quantized.nodes[end].name,
                                                meanAbsoluteCorrection: magnitudes.reduce(0, +) / Double(max(1, magnitudes.count)),
                                                maxAbsoluteCorrection: magnitudes.max() ?? 0, outputRMS: target.rms))
            start = end + 1
            progress("bias correction", layer + 1, ends.count)
        }
        return reports
    }

    /// Adds `correction` to the node's float bias (from `source`) and re-quantizes it to int32 with the bias scale
    /// `s_in · s_w[c]` (QDQGraphBuilder's names: `bias::q`, `bias::q.scale`). Returns the change of the dequantized
    /// bias per channel, which is what the simulated output moves by.
    private func correctBias(of node: Node, by correction: [Double], in quantized: inout Graph) throws -> [Float] {
        guard node.inputs.count > 2, !node.inputs[2].isEmpty else {
            throw QuantizationError("bias correction: node '\(node.name)' has no bias")
        }
        let bias = node.inputs[2], codesName = bias + "::q"
        guard case .float32(let floatBias)? = source.initializers[bias]?.storage,
              let codes = quantized.initializers[codesName], case .int32(let oldCodes) = codes.storage,
              case .float32(let scales)? = quantized.initializers[codesName + ".scale"]?.storage,
              floatBias.count == correction.count, oldCodes.count == correction.count, scales.count == correction.count else {
            throw QuantizationError("bias correction: node '\(node.name)': bias '\(bias)' is not a quantized int32 bias with \(correction.count) channels")
        }
        let newCodes = (0..<correction.count).map { c in
            Int32(clamping: Int(((floatBias[c] + Float(correction[c])) / scales[c]).rounded(.toNearestOrEven)))
        }
        quantized.initializers[codesName] = Initializer(name: codesName, shape: codes.shape, storage: .int32(newCodes))
        return (0..<correction.count).map { c in Float(Int(newCodes[c]) - Int(oldCodes[c])) * scales[c] }
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

    private static func shift(_ tensor: inout Tensor, byChannel change: [Float]) {
        guard change.contains(where: { $0 != 0 }) else { return }
        let channels = change.count, plane = tensor.shape.dropFirst(2).reduce(1, *)
        tensor.data.withUnsafeMutableBufferPointer { values in
            for index in 0..<(values.count / plane) {
                let delta = change[index % channels]
                for i in (index * plane)..<((index + 1) * plane) { values[i] += delta }
            }
        }
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
