import Graph

/// Evaluates, at import time, the nodes exporters use to compute constants and shapes: Constant, Identity,
/// Shape→Gather→Unsqueeze→Concat chains (PyTorch's `x.view(x.size(0), -1)`), Cast, Slice, Squeeze and integer
/// arithmetic. The engines then see static attributes instead of shape subgraphs.
struct ConstantFolding {
    /// Ops that exist in the IR only as folded values: a node of these kinds must fold or the import fails.
    static let foldOnlyOps: Set<String> = ["Constant", "Shape", "Gather", "Unsqueeze", "Squeeze", "Cast", "Slice", "Sub", "Div"]
    /// Ops folded when every input is known at import time (otherwise they become IR nodes).
    static let foldableOps: Set<String> = foldOnlyOps.union(["Identity", "Concat", "Add", "Mul"])

    /// Inputs each folded op needs before it can be evaluated (a corrupt file must not index past them).
    private static let requiredInputs: [String: Int] = [
        "Identity": 1, "Shape": 1, "Gather": 2, "Unsqueeze": 1, "Squeeze": 1, "Concat": 1, "Cast": 1, "Slice": 1,
        "Add": 2, "Sub": 2, "Mul": 2, "Div": 2,
    ]

    let node: Onnx_NodeProto
    let name: String
    let attributes: ONNXAttributes

    /// Whether this node is evaluated at import time: Constant and Shape always, other foldable ops when all
    /// their inputs are known.
    static func canFold(_ node: Onnx_NodeProto, context: ImportContext) -> Bool {
        guard foldableOps.contains(node.opType) else { return false }
        if node.opType == "Constant" || node.opType == "Shape" { return true }
        return node.input.allSatisfy { $0.isEmpty || context.isFolded($0) }
    }

    func fold(into context: inout ImportContext) throws(NodeConversionError) {
        guard let output = node.output.first, !output.isEmpty else {
            throw .graph(name, node.opType, "has no output")
        }
        let required = Self.requiredInputs[node.opType] ?? 0
        guard node.input.count >= required, node.input.prefix(required).allSatisfy({ !$0.isEmpty }) else {
            throw .graph(name, node.opType, "expected at least \(required) input(s), got \(node.input.count)")
        }
        let value: FoldedValue
        switch node.opType {
        case "Constant": value = try constantValue()
        case "Identity": value = context.folded[node.input[0]]!
        case "Shape": value = try shapeOf(context: context)
        case "Gather": value = try gather(context: context)
        case "Unsqueeze", "Squeeze": value = try squeezeOrUnsqueeze(context: context)
        case "Concat": value = try concat(context: context)
        case "Cast": value = try cast(context: context)
        case "Slice": value = try slice(context: context)
        case "Add", "Sub", "Mul", "Div": value = try arithmetic(context: context)
        default: throw .graph(name, node.opType, "cannot be folded")
        }
        context.folded[output] = Self.normalized(value)
    }

    // MARK: - Per-op folding

    private func constantValue() throws(NodeConversionError) -> FoldedValue {
        if let tensor = attributes.tensors["value"] {
            let (shape, storage) = try TensorProtoCodec.decode(tensor, what: "Constant node '\(name)'")
            return .constant(shape: shape, storage: storage)
        }
        switch (attributes["value_float"], attributes["value_floats"], attributes["value_int"], attributes["value_ints"]) {
        case (.float(let v)?, _, _, _): return .constant(shape: [], storage: .float32([v]))
        case (_, .floats(let v)?, _, _): return .constant(shape: [v.count], storage: .float32(v))
        case (_, _, .int(let v)?, _): return .constant(shape: [], storage: .int64([Int64(v)]))
        case (_, _, _, .ints(let v)?): return .constant(shape: [v.count], storage: .int64(v.map { Int64($0) }))
        default:
            throw .attribute(name, "Constant", "expected a 'value' tensor or value_float(s)/value_int(s) attribute")
        }
    }

    private func shapeOf(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        let input = node.input[0]
        guard let shape = context.shape(of: input) else {
            throw .graph(name, "Shape", "the shape of '\(input)' is not known at import time, so the shape computation cannot be folded")
        }
        let rank = shape.count
        func clamp(_ value: Int) -> Int { min(max(value < 0 ? value + rank : value, 0), rank) }
        let start = clamp(attributes["start"]?.int ?? 0)
        let end = clamp(attributes["end"]?.int ?? rank)
        let elements = (start..<max(start, end)).map { axis in
            shape[axis] >= 0 ? ShapeElement.known(shape[axis]) : .dimension(of: input, axis: axis)
        }
        return .symbolic(isScalar: false, elements: elements)
    }

    private func gather(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        guard (attributes["axis"]?.int ?? 0) == 0, let data = Self.integers(node.input[0], context),
              !data.isScalar, let indices = context.constant(node.input[1]) else {
            throw .graph(name, "Gather", "only Gather on a constant or shape vector along axis 0 with constant indices can be folded")
        }
        var picked: [ShapeElement] = []
        for index in Self.integerValues(indices.storage).map({ Int($0) }) {
            let position = index < 0 ? index + data.elements.count : index
            guard data.elements.indices.contains(position) else {
                throw .graph(name, "Gather", "index \(index) out of range for \(data.elements.count) elements")
            }
            picked.append(data.elements[position])
        }
        return .symbolic(isScalar: indices.shape.isEmpty, elements: picked)
    }

    private func squeezeOrUnsqueeze(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        let input = node.input[0]
        // Axes became an input in opset 13.
        let axes: [Int]?
        if node.input.count > 1 && !node.input[1].isEmpty {
            axes = try context.constantInts(node.input[1], for: name, op: node.opType, role: "axes")
        } else {
            axes = attributes["axes"]?.ints
        }
        let unsqueeze = node.opType == "Unsqueeze"
        if case .symbolic? = context.folded[input], let symbolic = Self.integers(input, context) {
            if unsqueeze && symbolic.isScalar && (axes == [0] || axes == [-1]) {
                return .symbolic(isScalar: false, elements: symbolic.elements)
            }
            if !unsqueeze && !symbolic.isScalar && symbolic.elements.count == 1 && (axes == nil || axes == [0] || axes == [-1]) {
                return .symbolic(isScalar: true, elements: symbolic.elements)
            }
        }
        guard let (shape, storage) = context.constant(input) else {
            throw .graph(name, node.opType, "cannot fold \(node.opType) of a shape value with axes \(axes ?? [])")
        }
        var newShape = shape
        if unsqueeze {
            guard let axes else { throw .attribute(name, node.opType, "missing axes") }
            let rank = shape.count + axes.count
            for axis in axes.map({ $0 < 0 ? $0 + rank : $0 }).sorted() {
                guard axis >= 0 && axis <= newShape.count else { throw .graph(name, node.opType, "axis out of range") }
                newShape.insert(1, at: axis)
            }
        } else {
            let squeezed = Set((axes ?? shape.indices.filter { shape[$0] == 1 }).map { $0 < 0 ? $0 + shape.count : $0 })
            newShape = shape.indices.filter { !squeezed.contains($0) }.map { shape[$0] }
        }
        return .constant(shape: newShape, storage: storage)
    }

    private func concat(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        let inputs = node.input.filter { !$0.isEmpty }
        let parts = inputs.compactMap { Self.integers($0, context) }
        if parts.count == inputs.count && parts.allSatisfy({ !$0.isScalar }) {
            return .symbolic(isScalar: false, elements: parts.flatMap(\.elements))
        }
        let constants = inputs.compactMap { context.constant($0) }
        guard constants.count == inputs.count, constants.allSatisfy({ $0.shape.count == 1 && $0.storage.dataType == .float32 }) else {
            throw .graph(name, "Concat", "only rank-1 constants and shape vectors can be concatenated at import time")
        }
        let values = constants.flatMap { $0.storage.floats }
        return .constant(shape: [values.count], storage: .float32(values))
    }

    private func cast(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        let target = attributes["to"]?.int ?? 0
        let input = node.input[0]
        if case .symbolic? = context.folded[input], target == 6 || target == 7 {
            return context.folded[input]!
        }
        guard let (shape, storage) = context.constant(input) else {
            throw .graph(name, "Cast", "cannot fold a cast of a runtime dimension to \(TensorProtoCodec.elementTypeName(Int32(target)))")
        }
        let floats = storage.floats
        switch target {
        case 1: return .constant(shape: shape, storage: .float32(floats))
        case 6: return .constant(shape: shape, storage: .int32(Self.integerValues(storage).map { Int32(clamping: $0) }))
        case 7: return .constant(shape: shape, storage: .int64(Self.integerValues(storage)))
        default: throw .attribute(name, "Cast", "cast to \(TensorProtoCodec.elementTypeName(Int32(target))) is not supported")
        }
    }

    private func slice(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        guard let data = Self.integers(node.input[0], context), !data.isScalar else {
            throw .graph(name, "Slice", "only slices of integer vectors (shapes) can be folded")
        }
        func input(_ index: Int, _ role: String) throws(NodeConversionError) -> [Int]? {
            guard node.input.count > index, !node.input[index].isEmpty else { return nil }
            return try context.constantInts(node.input[index], for: name, op: "Slice", role: role)
        }
        let starts = try input(1, "starts") ?? attributes["starts"]?.ints ?? [0]
        let ends = try input(2, "ends") ?? attributes["ends"]?.ints ?? [Int.max]
        let axes = try input(3, "axes") ?? attributes["axes"]?.ints ?? [0]
        let steps = try input(4, "steps") ?? [1]
        guard starts.count == 1, ends.count == 1, axes == [0] || axes == [-1], steps == [1] else {
            throw .graph(name, "Slice", "only 1-D slices with step 1 can be folded")
        }
        let count = data.elements.count
        func clamp(_ value: Int) -> Int { min(max(value < 0 ? value + count : value, 0), count) }
        let start = clamp(starts[0]), end = clamp(ends[0])
        return .symbolic(isScalar: false, elements: Array(data.elements[start..<max(start, end)]))
    }

    private func arithmetic(context: ImportContext) throws(NodeConversionError) -> FoldedValue {
        guard let a = context.constant(node.input[0]), let b = context.constant(node.input[1]) else {
            throw .graph(name, node.opType, "arithmetic on a runtime dimension cannot be folded (only constants can)")
        }
        let (shape, count) = a.storage.count >= b.storage.count ? (a.shape, a.storage.count) : (b.shape, b.storage.count)
        guard a.storage.count == b.storage.count || a.storage.count == 1 || b.storage.count == 1 else {
            throw .graph(name, node.opType, "constant folding supports only equal shapes or a scalar operand, got \(a.shape) and \(b.shape)")
        }
        let op = node.opType
        if a.storage.dataType == .float32 || b.storage.dataType == .float32 {
            let x = a.storage.floats, y = b.storage.floats
            let result = (0..<count).map { i -> Float in
                let l = x[x.count == 1 ? 0 : i], r = y[y.count == 1 ? 0 : i]
                switch op { case "Add": return l + r; case "Sub": return l - r; case "Mul": return l * r; default: return l / r }
            }
            return .constant(shape: shape, storage: .float32(result))
        }
        let x = Self.integerValues(a.storage), y = Self.integerValues(b.storage)
        var result: [Int64] = []
        for i in 0..<count {
            let l = x[x.count == 1 ? 0 : i], r = y[y.count == 1 ? 0 : i]
            switch op {
            case "Add": result.append(l &+ r)
            case "Sub": result.append(l &- r)
            case "Mul": result.append(l &* r)
            default:
                guard r != 0 else { throw .graph(name, op, "integer division by zero") }
                // ONNX integer Div truncates toward zero like C; Swift's / does too.
                result.append(l / r)
            }
        }
        return .constant(shape: shape, storage: .int64(result))
    }

    // MARK: - Helpers

    /// An integer vector or scalar (symbolic, or a constant of an integer type).
    static func integers(_ name: String, _ context: ImportContext) -> (isScalar: Bool, elements: [ShapeElement])? {
        switch context.folded[name] {
        case .symbolic(let isScalar, let elements)?:
            return (isScalar, elements)
        case .constant(let shape, let storage)? where shape.count <= 1 && storage.dataType != .float32:
            return (shape.isEmpty, integerValues(storage).map { .known(Int($0)) })
        default:
            return nil
        }
    }

    static func integerValues(_ storage: TensorStorage) -> [Int64] {
        switch storage {
        case .int64(let values): return values
        case .int32(let values): return values.map { Int64($0) }
        case .int8(let values): return values.map { Int64($0) }
        case .uint8(let values): return values.map { Int64($0) }
        case .float32(let values):
            // Clamped: a corrupt or odd constant (NaN, 1e30) must not trap the conversion.
            return values.map { $0.isNaN ? 0 : Int64(max(min($0, 9.2e18), -9.2e18)) }
        }
    }

    /// A symbolic value whose elements are all known is an ordinary int64 constant.
    private static func normalized(_ value: FoldedValue) -> FoldedValue {
        guard case .symbolic(let isScalar, let elements) = value else { return value }
        var known: [Int64] = []
        for element in elements {
            guard case .known(let v) = element else { return value }
            known.append(Int64(v))
        }
        return .constant(shape: isScalar ? [] : [known.count], storage: .int64(known))
    }
}
