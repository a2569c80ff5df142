import Graph

/// Which quantized layers of a QDQ graph ONNX Runtime may compute wrongly on x86 CPUs without VNNI: those where two
/// weights of one output channel times the largest input activation code can leave int16 (`vpmaddubsw` adds two
/// u8·s8 products into a saturating int16; `quantize` and `qat` avoid it with `target: onnxruntime-x86`).
/// The bound uses each channel's two largest weight magnitudes, so it does not depend on how ONNX Runtime pairs
/// the reduction dimension: a layer it does not list is exact there.
public enum PairSaturationCheck {
    public struct Layer: Sendable, Equatable {
        public let node: String
        /// The largest |a₁w₁ + a₂w₂| the layer's codes allow.
        public let worstPairSum: Int
    }

    public static let int16Limit = 32_767

    public static func layersThatMaySaturate(in graph: Graph) -> [Layer] {
        var producers: [String: Node] = [:]
        for node in graph.nodes { for output in node.outputs { producers[output] = node } }
        var layers: [Layer] = []
        for node in graph.nodes where node.op == .conv || node.op == .gemm {
            guard node.inputs.count > 1,
                  let input = producers[node.inputs[0]], input.op == .dequantizeLinear,
                  let weightDQ = producers[node.inputs[1]], weightDQ.op == .dequantizeLinear,
                  let weight = graph.initializers[weightDQ.inputs[0]], case .int8(let codes) = weight.storage else { continue }
            let largestActivation = (1 << input.int("bits", default: 8)) - 1
            let channelsLast = node.op == .gemm && node.int("transB", default: 0) == 0
            let channels = weight.shape[channelsLast ? 1 : 0]
            guard channels > 0 else { continue }
            var first = [Int](repeating: 0, count: channels), second = [Int](repeating: 0, count: channels)
            for (index, code) in codes.enumerated() {
                let channel = channelsLast ? index % channels : index / (codes.count / channels)
                let magnitude = abs(Int(code))
                if magnitude > first[channel] { second[channel] = first[channel]; first[channel] = magnitude }
                else if magnitude > second[channel] { second[channel] = magnitude }
            }
            let worst = (0..<channels).map { largestActivation * (first[$0] + second[$0]) }.max() ?? 0
            if worst > int16Limit { layers.append(Layer(node: node.name, worstPairSum: worst)) }
        }
        return layers
    }

    /// One sentence for a user exporting `file` to ONNX, or nil when ONNX Runtime computes it exactly on every x86 CPU.
    public static func warning(for graph: Graph, file: String) -> String? {
        let layers = layersThatMaySaturate(in: graph)
        guard let worst = layers.max(by: { $0.worstPairSum < $1.worstPairSum }) else { return nil }
        return "\(file): \(layers.count) layer\(layers.count == 1 ? "" : "s") (e.g. '\(worst.node)') have 8-bit weights with 8-bit activations; ONNX Runtime on x86 CPUs without VNNI (AVX2) adds u8·s8 pairs into saturating int16 (up to \(worst.worstPairSum) > 32767) and loses accuracy there. For a file exact on every x86 CPU, quantize with target: onnxruntime-x86 (7-bit weights; docs/quantization.md, \"ONNX Runtime on x86\")"
    }
}
