/// Validation and shape inference: checks that the graph is well formed (topological order, every input defined,
/// attributes sane, operand shapes compatible) and computes the type and shape of every value.
///
/// A dimension of `-1` is dynamic (usually the batch) and propagates: any size computed from it is `-1` too.
/// Executors call `infer` again with concrete input shapes to get concrete shapes for one batch size.
public enum ShapeInference {
    /// Infers every value's type (graph inputs, node outputs; initializers are included with their own shapes).
    /// `inputShapes` replaces declared input shapes (e.g. a concrete batch size).
    public static func infer(_ graph: Graph, inputShapes: [String: [Int]] = [:]) throws -> [String: ValueInfo] {
        var known: [String: ValueInfo] = [:]
        for (name, initializer) in graph.initializers {
            guard Dim.elementCount(initializer.shape) != nil else {
                throw GraphValidationError(node: nil, "initializer '\(name)' has invalid shape \(initializer.shape)")
            }
            known[name] = ValueInfo(name: name, dataType: initializer.storage.dataType, shape: initializer.shape)
        }
        for input in graph.inputs {
            var info = input
            if let shape = inputShapes[input.name] { info.shape = shape }
            guard info.shape.allSatisfy({ $0 >= -1 }), Dim.elementCount(info.shape) != nil else {
                throw GraphValidationError(node: nil, "input '\(input.name)' has invalid shape \(info.shape) (expected sizes ≥ 0, or -1 for dynamic)")
            }
            known[input.name] = info
        }
        for name in inputShapes.keys where !graph.inputs.contains(where: { $0.name == name }) {
            throw GraphValidationError(node: nil, "'\(name)' is not a graph input (inputs: \(graph.inputs.map(\.name)))")
        }
        for node in graph.nodes {
            var operands: [ValueInfo?] = []
            for (index, name) in node.inputs.enumerated() {
                if name.isEmpty { operands.append(nil); continue }
                guard let info = known[name] else {
                    throw GraphValidationError(node: node, "input \(index) '\(name)' is not defined before this node "
                        + "(expected a graph input, an initializer or an earlier node's output)")
                }
                operands.append(info)
            }
            let shapes = try OperatorShapes.outputs(of: node, operands: operands, initializers: graph.initializers)
            for (index, name) in node.outputs.enumerated() where !name.isEmpty {
                guard index < shapes.count else {
                    throw GraphValidationError(node: node, "output \(index) '\(name)' is not supported (expected at most \(shapes.count) outputs)")
                }
                guard Dim.elementCount(shapes[index].shape) != nil else {
                    throw GraphValidationError(node: node, "output '\(name)' would have shape \(shapes[index].shape), which is too large")
                }
                guard known[name] == nil else {
                    throw GraphValidationError(node: node, "output '\(name)' is already defined (every value must be produced once)")
                }
                known[name] = ValueInfo(name: name, dataType: shapes[index].dataType, shape: shapes[index].shape)
            }
        }
        for output in graph.outputs where known[output.name] == nil {
            throw GraphValidationError(node: nil, "graph output '\(output.name)' is never produced")
        }
        return known
    }
}

extension Graph {
    /// The graph with `valueInfo` filled for every graph input and node output and with graph output shapes set
    /// from inference; throws `GraphValidationError` when the graph is malformed.
    public func validated() throws -> Graph {
        let inferred = try ShapeInference.infer(self)
        var result = self
        var infos: [String: ValueInfo] = [:]
        for input in inputs { infos[input.name] = inferred[input.name] }
        for node in nodes { for name in node.outputs where !name.isEmpty { infos[name] = inferred[name] } }
        result.valueInfo = infos
        result.outputs = try outputs.map { declared in
            let actual = inferred[declared.name]!
            let compatible = declared.shape.isEmpty || (declared.shape.count == actual.shape.count
                && zip(declared.shape, actual.shape).allSatisfy { $0 == $1 || $0 == -1 || $1 == -1 })
            guard compatible else {
                throw GraphValidationError(node: nil, "graph output '\(declared.name)' is declared \(declared.shape) but inferred \(actual.shape)")
            }
            return actual
        }
        return result
    }
}

/// Arithmetic on dimensions where `-1` (dynamic) absorbs everything.
enum Dim {
    /// Largest size of one dimension or attribute value we accept; keeps all later arithmetic far from overflow.
    static let limit = 1 << 31

    /// Elements of one instance of `shape` (dynamic dims count as 1); nil when a size is out of range or the
    /// product overflows. Shape inference checks every value with it, so other arithmetic on shapes is safe.
    static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= -1, dimension <= limit else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: max(dimension, 1))
            guard !overflow else { return nil }
            count = product
        }
        return count
    }

    static func product(_ dims: some Collection<Int>) -> Int {
        dims.contains(-1) ? -1 : dims.reduce(1, *)
    }

    /// Numpy broadcasting of two dimensions, nil when incompatible.
    static func broadcast(_ a: Int, _ b: Int) -> Int? {
        if a == b { return a }
        if a == 1 { return b }
        if b == 1 { return a }
        if a == -1 { return b }
        if b == -1 { return a }
        return nil
    }

    static func broadcastShapes(_ a: [Int], _ b: [Int]) -> [Int]? {
        let rank = max(a.count, b.count)
        let pa = [Int](repeating: 1, count: rank - a.count) + a
        let pb = [Int](repeating: 1, count: rank - b.count) + b
        var result: [Int] = []
        for (x, y) in zip(pa, pb) {
            guard let d = broadcast(x, y) else { return nil }
            result.append(d)
        }
        return result
    }
}
