import Foundation

/// What `qatflow inspect MODEL` prints: one row per node (name, op, output shape with the batch shown as N,
/// parameters, multiply-accumulates per image) and totals.
///
/// Counting rules, chosen to match what papers and PyTorch summaries report:
/// - parameters = elements of the initializers a node reads, each initializer counted once (at its first reader),
///   except BatchNormalization running mean/variance and quantization scales/zero points, which are statistics
///   and encoding parameters rather than learned weights;
/// - MACs per image, computed with a batch of 1: Conv = outC·outH·outW·(inC/group)·kH·kW, Gemm = M·N·K,
///   MatMul = batch·M·N·K; every other op (elementwise, BN, pools, softmax, data movement) counts 0 because it
///   does no multiply-accumulate worth comparing.
public struct GraphSummary: Sendable, CustomStringConvertible {
    public struct Row: Sendable, Equatable {
        public var name: String
        public var op: OpType
        /// First output's shape; `-1` is the dynamic batch (printed as N).
        public var outputShape: [Int]
        public var parameters: Int
        public var multiplyAccumulates: Int
    }

    public let graphName: String
    public let inputs: [ValueInfo]
    public let rows: [Row]
    public let totalParameters: Int
    /// Per image.
    public let totalMultiplyAccumulates: Int
    public let fileSize: Int?

    public init(graph: Graph, fileSize: Int? = nil) throws {
        let dynamicShapes = try ShapeInference.infer(graph)
        // One image: the leading (batch) dimension becomes 1. A graph that hard-codes its batch (a Reshape to
        // [4, -1], say) may not allow that; its declared shapes are used instead.
        var singleImage: [String: [Int]] = [:]
        for input in graph.inputs where !input.shape.isEmpty { singleImage[input.name] = [1] + input.shape.dropFirst() }
        let shapes = (try? ShapeInference.infer(graph, inputShapes: singleImage)) ?? dynamicShapes

        var counted = Set<String>()
        var rows: [Row] = []
        for node in graph.nodes {
            let excluded: Set<Int>
            switch node.op {
            case .batchNormalization: excluded = [3, 4]
            case .quantizeLinear, .dequantizeLinear: excluded = [1, 2]
            default: excluded = []
            }
            var parameters = 0
            for (index, name) in node.inputs.enumerated() where !excluded.contains(index) {
                guard let initializer = graph.initializers[name], !counted.contains(name) else { continue }
                counted.insert(name)
                parameters += initializer.storage.count
            }
            let output = node.outputs.first ?? ""
            rows.append(Row(name: node.name, op: node.op, outputShape: dynamicShapes[output]?.shape ?? [],
                            parameters: parameters, multiplyAccumulates: Self.multiplyAccumulates(node, shapes: shapes)))
        }
        self.graphName = graph.name
        self.inputs = graph.inputs
        self.rows = rows
        self.totalParameters = rows.reduce(0) { $0 + $1.parameters }
        self.totalMultiplyAccumulates = rows.reduce(0) { $0 + $1.multiplyAccumulates }
        self.fileSize = fileSize
    }

    static func multiplyAccumulates(_ node: Node, shapes: [String: ValueInfo]) -> Int {
        func shape(_ name: String) -> [Int] { (shapes[name]?.shape ?? []).map { max($0, 1) } }
        switch node.op {
        case .conv:
            let out = shape(node.outputs[0]), weights = shape(node.inputs[1])
            guard out.count == 4, weights.count == 4 else { return 0 }
            return out[1] * out[2] * out[3] * weights[1] * weights[2] * weights[3]
        case .gemm:
            let out = shape(node.outputs[0]), a = shape(node.inputs[0])
            guard out.count == 2, a.count == 2 else { return 0 }
            let k = node.int("transA", default: 0) != 0 ? a[0] : a[1]
            return out[0] * out[1] * k
        case .matMul:
            let out = shape(node.outputs[0]), a = shape(node.inputs[0])
            guard let k = a.last else { return 0 }
            return out.reduce(1, *) * k
        default:
            return 0
        }
    }

    /// `0.70 M` style: millions with two decimals.
    public static func formatParameters(_ count: Int) -> String {
        String(format: "%.2f M", Double(count) / 1e6)
    }

    /// `27.7 M` style: three significant figures with K/M/G.
    public static func formatOperations(_ count: Int) -> String {
        let value = Double(count)
        for (unit, scale) in [("G", 1e9), ("M", 1e6), ("K", 1e3)] where value >= scale {
            let scaled = value / scale
            return String(format: scaled >= 100 ? "%.0f %@" : scaled >= 10 ? "%.1f %@" : "%.2f %@", scaled, unit)
        }
        return "\(count)"
    }

    public static func formatShape(_ shape: [Int]) -> String {
        "[" + shape.map { $0 == -1 ? "N" : "\($0)" }.joined(separator: ", ") + "]"
    }

    static func formatBytes(_ bytes: Int) -> String {
        bytes >= 1_000_000 ? String(format: "%.2f MB", Double(bytes) / 1e6)
            : bytes >= 1_000 ? String(format: "%.1f kB", Double(bytes) / 1e3) : "\(bytes) B"
    }

    /// The printed table.
    public var text: String {
        var lines: [String] = []
        lines.append("model: \(graphName)")
        for input in inputs { lines.append("input: \(input.name) \(Self.formatShape(input.shape)) \(input.dataType)") }
        let header = ["node", "op", "output", "params", "MACs"]
        let cells = rows.map { row in
            [row.name, row.op.rawValue, Self.formatShape(row.outputShape), "\(row.parameters)",
             row.multiplyAccumulates == 0 ? "0" : Self.formatOperations(row.multiplyAccumulates)]
        }
        let widths = (0..<header.count).map { column in ([header] + cells).map { $0[column].count }.max() ?? 0 }
        func line(_ values: [String]) -> String {
            values.enumerated().map { column, value in
                // Names and ops left-aligned, numbers right-aligned.
                let pad = String(repeating: " ", count: widths[column] - value.count)
                return column >= 3 ? pad + value : value + pad
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }
        lines.append(line(header))
        lines.append(String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)))
        lines.append(contentsOf: cells.map(line))
        lines.append("")
        lines.append("nodes: \(rows.count)")
        lines.append("params: \(Self.formatParameters(totalParameters)) (\(totalParameters))")
        lines.append("MACs: \(Self.formatOperations(totalMultiplyAccumulates)) per image (\(totalMultiplyAccumulates))")
        if let fileSize { lines.append("file size: \(Self.formatBytes(fileSize)) (\(fileSize) bytes)") }
        return lines.joined(separator: "\n") + "\n"
    }

    public var description: String { text }
}
