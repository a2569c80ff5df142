/// Typed, validated reads of the attributes shared by several ops (ONNX names and defaults).
/// Shape inference, transforms and executors read attributes through these so they all agree on defaults.
extension Node {
    /// Required float/int-list attribute or a validation error naming the node.
    func requireInts(_ key: String) throws -> [Int] {
        guard let value = attributes[key]?.ints else {
            throw GraphValidationError(node: self, "missing required ints attribute '\(key)'")
        }
        return value
    }

    /// Sliding-window parameters of Conv / AveragePool / MaxPool for a 2-D window.
    public func windowAttributes(kernel: [Int]) throws -> (strides: [Int], pads: [Int], dilations: [Int]) {
        let strides = ints("strides") ?? [1, 1]
        let pads = ints("pads") ?? [0, 0, 0, 0]
        let dilations = ints("dilations") ?? [1, 1]
        let sane = { (values: [Int]) in values.allSatisfy { $0 <= Dim.limit } }
        guard sane(strides), sane(pads), sane(dilations) else {
            throw GraphValidationError(node: self, "strides \(strides), pads \(pads), dilations \(dilations) must each be ≤ \(Dim.limit)")
        }
        guard kernel.count == 2, kernel.allSatisfy({ $0 >= 1 }) else {
            throw GraphValidationError(node: self, "expected a 2-D kernel of positive sizes, got \(kernel)")
        }
        guard strides.count == 2, strides.allSatisfy({ $0 >= 1 }) else {
            throw GraphValidationError(node: self, "expected 2 positive strides, got \(strides)")
        }
        guard pads.count == 4, pads.allSatisfy({ $0 >= 0 }) else {
            throw GraphValidationError(node: self, "expected 4 non-negative pads [top, left, bottom, right], got \(pads)")
        }
        guard dilations.count == 2, dilations.allSatisfy({ $0 >= 1 }) else {
            throw GraphValidationError(node: self, "expected 2 positive dilations, got \(dilations)")
        }
        if let autoPad = attributes["auto_pad"]?.string, autoPad != "NOTSET", autoPad != "VALID" || pads.contains(where: { $0 != 0 }) {
            throw GraphValidationError(node: self, "auto_pad '\(autoPad)' is not supported (expected NOTSET with explicit pads)")
        }
        return (strides, pads, dilations)
    }

    /// Normalises a possibly negative `axis` for a tensor of `rank` (valid range `-rank...rank-1`, or
    /// `-rank...rank` when `allowRank`, as Flatten does).
    public func normalizedAxis(_ axis: Int, rank: Int, allowRank: Bool = false) throws -> Int {
        let upper = allowRank ? rank : rank - 1
        guard axis >= -rank && axis <= upper else {
            throw GraphValidationError(node: self, "axis \(axis) out of range for rank \(rank)")
        }
        return axis < 0 ? axis + rank : axis
    }
}

/// The attribute kinds each op understands (ONNX names). A known attribute of the wrong kind is an error rather
/// than silently replaced by its default; unknown attributes are ignored, as importers may carry extras along.
enum AttributeSchema {
    enum Kind: String { case int, float, ints, floats, string }

    static let window: [String: Kind] = ["kernel_shape": .ints, "strides": .ints, "pads": .ints, "dilations": .ints, "auto_pad": .string]

    static func kinds(of op: OpType) -> [String: Kind] {
        switch op {
        case .conv: return window.merging(["group": .int]) { $1 }
        case .averagePool, .maxPool:
            return window.merging(["ceil_mode": .int, "count_include_pad": .int, "storage_order": .int]) { $1 }
        case .batchNormalization: return ["epsilon": .float, "momentum": .float, "training_mode": .int]
        case .clip: return ["min": .float, "max": .float]
        case .gemm: return ["transA": .int, "transB": .int, "alpha": .float, "beta": .float]
        case .flatten, .concat, .softmax, .quantizeLinear, .dequantizeLinear: return ["axis": .int, "saturate": .int]
        case .reshape: return ["shape": .ints, "allowzero": .int]
        case .pad: return ["pads": .ints, "value": .float, "mode": .string]
        case .dropout: return ["ratio": .float, "seed": .int, "training_mode": .int]
        case .relu, .add, .mul, .globalAveragePool, .matMul, .identity: return [:]
        }
    }

    static func check(_ node: Node) throws {
        let expected = kinds(of: node.op)
        for (name, value) in node.attributes.sorted(by: { $0.key < $1.key }) {
            guard let kind = expected[name] else { continue }
            let matches: Bool
            switch (kind, value) {
            case (.int, .int), (.ints, .ints), (.floats, .floats), (.string, .string): matches = true
            case (.float, .float), (.float, .int): matches = true
            default: matches = false
            }
            guard matches else {
                throw GraphValidationError(node: node, "attribute '\(name)' must be \(kind.rawValue), got \(value)")
            }
        }
    }
}
