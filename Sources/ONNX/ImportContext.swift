import Graph

/// An integer known at import time, or a runtime dimension the importer can only name (the dynamic batch).
enum ShapeElement: Equatable {
    case known(Int)
    case dimension(of: String, axis: Int)
}

/// A value computed at import time instead of at run time.
enum FoldedValue {
    /// A fully known tensor (initializer, Constant node, or the result of folding constants).
    case constant(shape: [Int], storage: TensorStorage)
    /// A shape computation that still mentions runtime dimensions: a rank-0 or rank-1 integer tensor.
    case symbolic(isScalar: Bool, elements: [ShapeElement])
}

/// Everything the importer knows while walking the ONNX nodes in order: folded values, static shapes of runtime
/// values, the IR initializers referenced so far and the nodes emitted so far.
struct ImportContext {
    let opset: Int
    /// Values known at import time, by ONNX value name.
    var folded: [String: FoldedValue] = [:]
    /// Static shapes of runtime values (graph inputs and node outputs); -1 marks a dynamic dimension.
    var runtimeShapes: [String: [Int]?] = [:]
    /// Shapes the file itself declares in `value_info`: a fallback when the importer cannot infer one.
    var declaredShapes: [String: [Int]] = [:]
    /// Initializers of the IR graph: only constants that an emitted node reads, so folded-away shape tensors and
    /// PyTorch's unused exports do not linger.
    var initializers: [String: Initializer] = [:]
    var nodes: [Node] = []
    /// Every value name an ONNX node or graph output reads, to tell unused optional outputs (Dropout's mask,
    /// MaxPool's indices) from ones the graph needs.
    let consumedNames: Set<String>
    private var usedNodeNames: Set<String> = []

    init(opset: Int, consumedNames: Set<String>) {
        self.opset = opset
        self.consumedNames = consumedNames
    }

    func isFolded(_ name: String) -> Bool { folded[name] != nil }

    func constant(_ name: String) -> (shape: [Int], storage: TensorStorage)? {
        if case .constant(let shape, let storage)? = folded[name] { return (shape, storage) }
        return nil
    }

    /// The static shape of any value: a runtime value's inferred shape or a constant's shape.
    func shape(of name: String) -> [Int]? {
        if let constant = constant(name) { return constant.shape }
        if case .symbolic(let isScalar, let elements)? = folded[name] { return isScalar ? [] : [elements.count] }
        return (runtimeShapes[name] ?? nil) ?? declaredShapes[name]
    }

    /// Makes a constant available to run-time nodes as an IR initializer (keeping its ONNX name).
    mutating func materializeInitializer(_ name: String, for node: String, op: String, role: String) throws(NodeConversionError) -> String {
        if initializers[name] != nil { return name }
        switch folded[name] {
        case .constant(let shape, let storage)?:
            initializers[name] = Initializer(name: name, shape: shape, storage: storage)
            return name
        case .symbolic?:
            throw .graph(node, op, "\(role) '\(name)' depends on a runtime dimension and cannot be a constant")
        case nil:
            throw .attribute(node, op, "\(role) '\(name)' must be a constant (initializer or Constant node), but it is computed at run time")
        }
    }

    /// The constant integers of an input (shape vectors, axes, pads), or a description of why they are not constant.
    func constantInts(_ name: String, for node: String, op: String, role: String) throws(NodeConversionError) -> [Int] {
        guard let (_, storage) = constant(name) else {
            throw .attribute(node, op, "\(role) input '\(name)' must be a constant")
        }
        switch storage {
        case .int64(let values): return values.map { Int($0) }
        case .int32(let values): return values.map { Int($0) }
        default: throw .attribute(node, op, "\(role) input '\(name)' must be int64, got \(storage.dataType)")
        }
    }

    /// A constant scalar as Float (Clip bounds, Pad value, Dropout ratio).
    func constantScalar(_ name: String, for node: String, op: String, role: String) throws(NodeConversionError) -> Float {
        guard let (_, storage) = constant(name), storage.count == 1 else {
            throw .attribute(node, op, "\(role) input '\(name)' must be a constant scalar")
        }
        return storage.floats[0]
    }

    /// A unique, non-empty node name (ONNX allows empty and duplicate names; the IR's transforms key on them).
    mutating func uniqueNodeName(_ proposed: String, op: String) -> String {
        let base = proposed.isEmpty ? "\(op)_\(nodes.count)" : proposed
        var name = base
        var suffix = 1
        while usedNodeNames.contains(name) {
            name = "\(base)_\(suffix)"
            suffix += 1
        }
        usedNodeNames.insert(name)
        return name
    }

    /// Appends a run-time node and records the static shape of its first output.
    mutating func emit(_ node: Node) {
        let inputShapes = node.inputs.map { $0.isEmpty ? nil : shape(of: $0) }
        let outputShape = StaticShapes.output(of: node, inputShapes: inputShapes)
        for (index, output) in node.outputs.enumerated() {
            runtimeShapes[output] = index == 0 ? outputShape : .some(nil)
        }
        nodes.append(node)
    }
}
