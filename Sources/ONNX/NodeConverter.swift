import Graph

/// Turns one ONNX node of an IR op into an IR `Node` in the normal form stated in GraphIR.swift: constant operands
/// become initializers, constant inputs that configure the op (Clip bounds, Reshape shape, Pad pads, Dropout ratio)
/// become attributes, and attribute values the engines do not implement are rejected with the node's name.
struct NodeConverter {
    let node: Onnx_NodeProto
    let name: String
    let op: OpType
    let opset: Int
    var attributes: ONNXAttributes

    mutating func convert(into context: inout ImportContext) throws(NodeConversionError) {
        var inputs = node.input
        var outputs = node.output
        let opName = node.opType
        func materialize(_ index: Int, _ role: String) throws(NodeConversionError) {
            guard index < inputs.count, !inputs[index].isEmpty else { return }
            inputs[index] = try context.materializeInitializer(inputs[index], for: name, op: opName, role: role)
        }
        func requireInputs(_ count: Int) throws(NodeConversionError) {
            guard inputs.count >= count, !inputs[0].isEmpty else {
                throw .graph(name, opName, "expected at least \(count) input(s), got \(inputs.count)")
            }
        }
        try requireInputs(1)

        switch op {
        case .conv:
            try requireInputs(2)
            try materialize(1, "weights")
            try materialize(2, "bias")
            guard let weights = context.constant(inputs[1]), weights.shape.count == 4 else {
                throw .attribute(name, opName, "only 2-D convolutions (rank-4 weights) are supported")
            }
            let kernel = Array(weights.shape[2...])
            if let declared = attributes["kernel_shape"]?.ints, declared != kernel {
                throw .attribute(name, opName, "kernel_shape \(declared) does not match the weights' \(kernel)")
            }
            try validateWindow(kernel: kernel)
            attributes.set("kernel_shape", .ints(kernel))
        case .averagePool, .maxPool:
            guard let kernel = attributes["kernel_shape"]?.ints else {
                throw .attribute(name, opName, "missing kernel_shape")
            }
            try validateWindow(kernel: kernel)
            // Only matters for MaxPool's indices output, which the IR does not have.
            attributes.remove("storage_order")
            if (attributes["ceil_mode"]?.int ?? 0) != 0 {
                try convertCeilModeToPadding(kernel: kernel, inputShape: context.shape(of: inputs[0]))
            }
            attributes.remove("ceil_mode")
        case .batchNormalization:
            try requireInputs(5)
            for (index, role) in ["scale", "bias", "mean", "variance"].enumerated() {
                try materialize(index + 1, role)
            }
            if (attributes["training_mode"]?.int ?? 0) != 0 {
                throw .attribute(name, opName, "training_mode=1 is not supported (expected an export in inference mode, training_mode=0)")
            }
            attributes.remove("training_mode")
            attributes.remove("spatial")
        case .gemm:
            try requireInputs(2)
            try materialize(1, "B (weights)")
            try materialize(2, "C (bias)")
        case .clip:
            try convertClipBounds(&inputs, context)
        case .reshape:
            try requireInputs(2)
            let shape = try reshapeTarget(shapeInput: inputs[1], data: inputs[0], context: context)
            if (attributes["allowzero"]?.int ?? 0) != 0 && shape.contains(0) {
                throw .attribute(name, opName, "allowzero=1 with a 0 in the shape is not supported (expected allowzero=0)")
            }
            attributes.remove("allowzero")
            attributes.set("shape", .ints(shape))
            inputs = [inputs[0]]
        case .pad:
            try convertPad(&inputs, context)
        case .dropout:
            try convertDropout(&inputs, context)
        case .softmax:
            try normalizeSoftmaxAxis(rank: context.shape(of: inputs[0])?.count)
        case .quantizeLinear, .dequantizeLinear:
            try requireInputs(2)
            try materialize(1, "scale")
            if inputs.count > 2 && !inputs[2].isEmpty {
                try materialize(2, "zero point")
            } else if op == .quantizeLinear {
                // ONNX's default: uint8 output with zero point 0; the IR wants it explicit.
                let zeroPoint = "\(name)_zero_point"
                context.initializers[zeroPoint] = Initializer(name: zeroPoint, shape: [], storage: .uint8([0]))
                inputs = [inputs[0], inputs[1], zeroPoint]
            }
            if attributes["axis"] == nil { attributes.set("axis", .int(1)) }
        case .add, .mul, .matMul:
            try requireInputs(2)
        case .relu, .globalAveragePool, .flatten, .identity, .concat:
            break
        }
        // Any other constant operand (Add with a bias vector, MatMul weights, Concat with a constant) is an initializer.
        for index in inputs.indices where !inputs[index].isEmpty && context.isFolded(inputs[index]) {
            try materialize(index, "input \(index)")
        }
        outputs = try primaryOutputs(outputs, context: context)
        context.emit(Node(name: name, op: op, inputs: inputs, outputs: outputs, attributes: attributes.values))
    }

    // MARK: - Per-op normalisation

    /// Dilations, auto_pad and window rank, checked for Conv, AveragePool and MaxPool.
    private mutating func validateWindow(kernel: [Int]) throws(NodeConversionError) {
        guard kernel.count == 2, kernel.allSatisfy({ DimensionLimits.isValidSize($0) && $0 > 0 }) else {
            throw .attribute(name, node.opType, "only 2-D windows of positive size are supported, got kernel \(kernel)")
        }
        if let strides = attributes["strides"]?.ints,
           strides.count != 2 || !strides.allSatisfy({ DimensionLimits.isValidSize($0) && $0 > 0 }) {
            throw .attribute(name, node.opType, "expected 2 positive strides, got \(strides)")
        }
        if let dilations = attributes["dilations"]?.ints, dilations.contains(where: { $0 != 1 }) {
            throw .attribute(name, node.opType, "dilations \(dilations) are not supported (expected all 1)")
        }
        attributes.remove("dilations")
        switch attributes["auto_pad"]?.string ?? "NOTSET" {
        case "NOTSET":
            break
        case "VALID":
            // VALID means no padding: the same as NOTSET with zero pads.
            attributes.set("pads", .ints([0, 0, 0, 0]))
        case let mode:
            throw .attribute(name, node.opType, "auto_pad '\(mode)' is not supported (expected NOTSET with explicit pads)")
        }
        attributes.remove("auto_pad")
        if let pads = attributes["pads"]?.ints, pads.count != 4 || !pads.allSatisfy(DimensionLimits.isValidSize) {
            throw .attribute(name, node.opType, "expected 4 non-negative pads [top, left, bottom, right], got \(pads)")
        }
    }

    /// The engines pool with ceil_mode 0. ceil_mode 1 only adds a last, partial window at the end of each axis;
    /// extra end padding gives the same windows, and padding neither wins a max nor counts in an average that
    /// excludes padding. With count_include_pad=1 the divisor would change, so that combination is rejected.
    private mutating func convertCeilModeToPadding(kernel: [Int], inputShape: [Int]?) throws(NodeConversionError) {
        guard let inputShape, inputShape.count == 4, inputShape[2] >= 0, inputShape[3] >= 0 else {
            throw .attribute(name, node.opType, "ceil_mode=1 needs static spatial dimensions to become explicit padding (expected ceil_mode 0)")
        }
        if op == .averagePool && (attributes["count_include_pad"]?.int ?? 0) != 0 {
            throw .attribute(name, node.opType, "ceil_mode=1 with count_include_pad=1 is not supported (expected ceil_mode 0)")
        }
        let strides = attributes["strides"]?.ints ?? [1, 1]
        var pads = attributes["pads"]?.ints ?? [0, 0, 0, 0]
        for axis in 0..<2 {
            let size = inputShape[axis + 2]
            let padded = size + pads[axis] + pads[axis + 2]
            var count = (padded - kernel[axis] + strides[axis] - 1) / strides[axis] + 1
            // As ONNX Runtime and PyTorch: the last window must start inside the input or the leading padding.
            if (count - 1) * strides[axis] >= size + pads[axis] { count -= 1 }
            pads[axis + 2] += max(0, (count - 1) * strides[axis] + kernel[axis] - padded)
        }
        attributes.set("pads", .ints(pads))
    }

    /// Clip's min/max moved from attributes to optional inputs in opset 11; the IR keeps them as attributes.
    private mutating func convertClipBounds(_ inputs: inout [String], _ context: ImportContext) throws(NodeConversionError) {
        for (index, bound) in [(1, "min"), (2, "max")] where index < inputs.count && !inputs[index].isEmpty {
            attributes.set(bound, .float(try context.constantScalar(inputs[index], for: name, op: "Clip", role: bound)))
        }
        inputs = [inputs[0]]
    }

    private mutating func convertPad(_ inputs: inout [String], _ context: ImportContext) throws(NodeConversionError) {
        let mode = attributes["mode"]?.string ?? "constant"
        guard mode == "constant" else {
            throw .attribute(name, "Pad", "mode '\(mode)' is not supported (expected 'constant')")
        }
        attributes.remove("mode")
        var pads = attributes["pads"]?.ints ?? []
        var value = attributes["value"]?.float ?? 0
        if inputs.count > 1 && !inputs[1].isEmpty {
            pads = try context.constantInts(inputs[1], for: name, op: "Pad", role: "pads")
        }
        if inputs.count > 2 && !inputs[2].isEmpty {
            value = try context.constantScalar(inputs[2], for: name, op: "Pad", role: "constant_value")
        }
        if inputs.count > 3 && !inputs[3].isEmpty {
            // Opset 18: pads cover only `axes`; expand to every axis as the IR expects.
            let axes = try context.constantInts(inputs[3], for: name, op: "Pad", role: "axes")
            guard let rank = context.shape(of: inputs[0])?.count, pads.count == 2 * axes.count else {
                throw .attribute(name, "Pad", "pads with axes need a known input rank and 2 pads per axis")
            }
            var full = Array(repeating: 0, count: 2 * rank)
            for (position, axis) in axes.enumerated() {
                let normalized = axis < 0 ? axis + rank : axis
                guard (0..<rank).contains(normalized) else {
                    throw .attribute(name, "Pad", "axis \(axis) out of range for rank \(rank)")
                }
                full[normalized] = pads[position]
                full[normalized + rank] = pads[position + axes.count]
            }
            pads = full
        }
        guard !pads.isEmpty, pads.count % 2 == 0, pads.allSatisfy(DimensionLimits.isValidSize) else {
            throw .attribute(name, "Pad", "expected non-negative constant pads, got \(pads)")
        }
        attributes.set("pads", .ints(pads))
        attributes.set("value", .float(value))
        inputs = [inputs[0]]
    }

    /// Dropout's ratio and training_mode became inputs in opset 12; the IR keeps `ratio` as an attribute and runs
    /// Dropout according to the engine's mode, so an export that forces training mode is rejected.
    private mutating func convertDropout(_ inputs: inout [String], _ context: ImportContext) throws(NodeConversionError) {
        if inputs.count > 1 && !inputs[1].isEmpty {
            attributes.set("ratio", .float(try context.constantScalar(inputs[1], for: name, op: "Dropout", role: "ratio")))
        }
        if inputs.count > 2 && !inputs[2].isEmpty {
            let trainingMode = try context.constantScalar(inputs[2], for: name, op: "Dropout", role: "training_mode")
            guard trainingMode == 0 else {
                throw .attribute(name, "Dropout", "training_mode=true is not supported (expected an inference-mode export)")
            }
        }
        attributes.remove("seed")
        inputs = [inputs[0]]
    }

    /// Before opset 13 Softmax flattened the input to 2-D at `axis` (default 1); that equals the opset-13 form only
    /// when `axis` is the last axis.
    private mutating func normalizeSoftmaxAxis(rank: Int?) throws(NodeConversionError) {
        let axis = attributes["axis"]?.int ?? (opset < 13 ? 1 : -1)
        guard opset < 13 else { return }
        let isLast = axis == -1 || (rank.map { axis == $0 - 1 } ?? false)
        guard isLast else {
            throw .attribute(name, "Softmax", "axis \(axis) with opset < 13 flattens the input; only the last axis is supported (input rank \(rank.map(String.init) ?? "unknown"))")
        }
        attributes.set("axis", .int(-1))
    }

    /// Folds Reshape's shape input into static values. A runtime dimension (the dynamic batch, from PyTorch's
    /// `x.size(0)`) becomes 0 (copy the data's dimension) when it sits at the same axis and the data's dimension
    /// there is dynamic too — the batch flows through a CNN unchanged; anywhere else it becomes the one -1.
    private func reshapeTarget(shapeInput: String, data: String, context: ImportContext) throws(NodeConversionError) -> [Int] {
        guard let shape = ConstantFolding.integers(shapeInput, context), !shape.isScalar else {
            throw .attribute(name, "Reshape", "the shape input '\(shapeInput)' must be a constant or a foldable shape computation")
        }
        var result: [Int] = []
        var hasInferred = shape.elements.contains(.known(-1))
        let dataShape = context.shape(of: data)
        for (position, element) in shape.elements.enumerated() {
            switch element {
            case .known(let value):
                guard value == -1 || DimensionLimits.isValidSize(value) else {
                    throw .attribute(name, "Reshape", "shape value \(value) is out of range")
                }
                result.append(value)
            case .dimension(let value, let axis) where axis == position && (value == data || dataShape?[safe: position] == -1):
                // The same runtime dimension at the same axis of the data: copy it.
                result.append(0)
            case .dimension(let value, let axis):
                guard !hasInferred else {
                    throw .graph(name, "Reshape", "cannot fold the shape: dimension \(axis) of '\(value)' is only known at run time and the shape already has a -1")
                }
                hasInferred = true
                result.append(-1)
            }
        }
        return result
    }

    /// The outputs the IR node keeps: ONNX optional outputs the IR lacks (Dropout mask, MaxPool indices, BN
    /// running statistics) are dropped if nothing reads them.
    private func primaryOutputs(_ outputs: [String], context: ImportContext) throws(NodeConversionError) -> [String] {
        guard let first = outputs.first, !first.isEmpty else {
            throw .graph(name, node.opType, "has no output")
        }
        for extra in outputs.dropFirst() where !extra.isEmpty && context.consumedNames.contains(extra) {
            throw .attribute(name, node.opType, "output '\(extra)' is used, but only the first output of \(node.opType) is supported")
        }
        return [first]
    }
}

private extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
