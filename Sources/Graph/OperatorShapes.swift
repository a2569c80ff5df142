/// Per-operator validation and output type/shape rules (ONNX semantics, normalised as described on `OpType`).
enum OperatorShapes {
    typealias Info = (dataType: DataType, shape: [Int])

    static func outputs(of node: Node, operands: [ValueInfo?], initializers: [String: Initializer]) throws -> [Info] {
        func fail(_ message: String) -> GraphValidationError { GraphValidationError(node: node, message) }
        func operand(_ index: Int, _ role: String) throws -> ValueInfo {
            guard index < operands.count, let info = operands[index] else {
                throw fail("missing required input \(index) (\(role))")
            }
            return info
        }
        func requireInputCount(_ range: ClosedRange<Int>) throws {
            guard range.contains(node.inputs.count) else {
                throw fail("expected \(range.lowerBound == range.upperBound ? "\(range.lowerBound)" : "\(range.lowerBound)–\(range.upperBound)") inputs, got \(node.inputs.count)")
            }
        }
        func requireFloat(_ info: ValueInfo, _ role: String) throws {
            guard info.dataType == .float32 else { throw fail("\(role) '\(info.name)' must be float32, got \(info.dataType)") }
        }
        func requireInitializer(_ index: Int, _ role: String) throws -> Initializer {
            guard index < node.inputs.count, let value = initializers[node.inputs[index]] else {
                throw fail("input \(index) (\(role)) must be an initializer")
            }
            return value
        }
        func requireRank(_ info: ValueInfo, _ rank: Int, _ role: String) throws {
            guard info.shape.count == rank else { throw fail("\(role) '\(info.name)' must have rank \(rank), got shape \(info.shape)") }
        }

        try AttributeSchema.check(node)
        switch node.op {
        case .conv:
            try requireInputCount(2...3)
            let x = try operand(0, "X"), w = try operand(1, "W")
            try requireFloat(x, "X"); try requireFloat(w, "W")
            try requireRank(x, 4, "X"); try requireRank(w, 4, "W")
            let group = node.int("group", default: 1)
            let (outC, inCPerGroup) = (w.shape[0], w.shape[1])
            guard group >= 1, outC % group == 0 else { throw fail("group \(group) must be ≥ 1 and divide the \(outC) output channels") }
            if x.shape[1] != -1 && x.shape[1] != inCPerGroup * group {
                throw fail("input has \(x.shape[1]) channels but W \(w.shape) with group \(group) expects \(inCPerGroup * group)")
            }
            let kernel = Array(w.shape[2...3])
            if let declared = node.ints("kernel_shape"), declared != kernel {
                throw fail("kernel_shape \(declared) does not match W shape \(w.shape)")
            }
            if node.inputs.count == 3, let b = operands[2] {
                guard b.shape == [outC] else { throw fail("bias must have shape [\(outC)], got \(b.shape)") }
            }
            let window = try node.windowAttributes(kernel: kernel)
            let spatial = try windowOutput(node, input: Array(x.shape[2...3]), kernel: kernel, window: window)
            return [(.float32, [x.shape[0], outC] + spatial)]

        case .batchNormalization:
            try requireInputCount(5...5)
            let x = try operand(0, "X")
            try requireFloat(x, "X")
            guard x.shape.count >= 2 else { throw fail("X must have rank ≥ 2, got \(x.shape)") }
            if node.int("training_mode", default: 0) != 0 { throw fail("training_mode 1 is not supported (inference form only)") }
            for (index, role) in [(1, "scale"), (2, "B"), (3, "mean"), (4, "var")] {
                let p = try operand(index, role)
                if x.shape[1] != -1 && p.shape != [x.shape[1]] {
                    throw fail("\(role) must have shape [\(x.shape[1])], got \(p.shape)")
                }
            }
            return [(.float32, x.shape)]

        case .relu, .clip, .softmax:
            try requireInputCount(1...1)
            let x = try operand(0, "X")
            try requireFloat(x, "X")
            if node.op == .softmax { _ = try node.normalizedAxis(node.int("axis", default: -1), rank: x.shape.count) }
            if node.op == .clip, node.float("min", default: -.infinity) > node.float("max", default: .infinity) {
                throw fail("min \(node.float("min", default: 0)) exceeds max \(node.float("max", default: 0))")
            }
            return [(.float32, x.shape)]

        case .identity:
            try requireInputCount(1...1)
            let x = try operand(0, "input")
            return [(x.dataType, x.shape)]

        case .dropout:
            try requireInputCount(1...3)
            let x = try operand(0, "data")
            if node.outputs.count > 1 && !node.outputs[1].isEmpty {
                throw fail("the mask output is not supported (inference form has no mask)")
            }
            return [(x.dataType, x.shape)]

        case .add, .mul:
            try requireInputCount(2...2)
            let a = try operand(0, "A"), b = try operand(1, "B")
            try requireFloat(a, "A"); try requireFloat(b, "B")
            guard let shape = Dim.broadcastShapes(a.shape, b.shape) else {
                throw fail("shapes \(a.shape) and \(b.shape) do not broadcast")
            }
            return [(.float32, shape)]

        case .globalAveragePool:
            try requireInputCount(1...1)
            let x = try operand(0, "X")
            try requireFloat(x, "X")
            guard x.shape.count >= 3 else { throw fail("X must have rank ≥ 3, got \(x.shape)") }
            return [(.float32, Array(x.shape[0...1]) + [Int](repeating: 1, count: x.shape.count - 2))]

        case .averagePool, .maxPool:
            try requireInputCount(1...1)
            let x = try operand(0, "X")
            try requireFloat(x, "X")
            try requireRank(x, 4, "X")
            if node.outputs.count > 1 && !node.outputs[1].isEmpty { throw fail("the Indices output is not supported") }
            let kernel = try node.requireInts("kernel_shape")
            let window = try node.windowAttributes(kernel: kernel)
            guard window.dilations == [1, 1] else { throw fail("pooling dilations must be 1, got \(window.dilations)") }
            guard node.int("ceil_mode", default: 0) == 0 else { throw fail("ceil_mode 1 is not supported (expected 0)") }
            guard window.pads[0] < kernel[0], window.pads[2] < kernel[0], window.pads[1] < kernel[1], window.pads[3] < kernel[1] else {
                throw fail("pads \(window.pads) must be smaller than kernel \(kernel)")
            }
            let spatial = try windowOutput(node, input: Array(x.shape[2...3]), kernel: kernel, window: window)
            return [(.float32, Array(x.shape[0...1]) + spatial)]

        case .gemm:
            try requireInputCount(2...3)
            let a = try operand(0, "A"), b = try operand(1, "B")
            try requireFloat(a, "A"); try requireFloat(b, "B")
            try requireRank(a, 2, "A"); try requireRank(b, 2, "B")
            let transA = node.int("transA", default: 0) != 0, transB = node.int("transB", default: 0) != 0
            let (m, ka) = transA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
            let (kb, n) = transB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
            guard ka == kb || ka == -1 || kb == -1 else { throw fail("inner dimensions differ: A \(a.shape) (transA \(transA)) · B \(b.shape) (transB \(transB))") }
            if node.inputs.count == 3, let c = operands[2] {
                guard let broadcast = Dim.broadcastShapes(c.shape, [m, n]), broadcast.count == 2,
                      broadcast[1] == n || n == -1, broadcast[0] == m || m == -1 else {
                    throw fail("C \(c.shape) does not broadcast to [\(m), \(n)]")
                }
            }
            return [(.float32, [m, n])]

        case .matMul:
            try requireInputCount(2...2)
            let a = try operand(0, "A"), b = try operand(1, "B")
            try requireFloat(a, "A"); try requireFloat(b, "B")
            guard let shape = matMulShape(a.shape, b.shape) else { throw fail("shapes \(a.shape) and \(b.shape) do not multiply") }
            return [(.float32, shape)]

        case .flatten:
            try requireInputCount(1...1)
            let x = try operand(0, "input")
            let axis = try node.normalizedAxis(node.int("axis", default: 1), rank: x.shape.count, allowRank: true)
            return [(x.dataType, [Dim.product(x.shape[..<axis]), Dim.product(x.shape[axis...])])]

        case .reshape:
            try requireInputCount(1...1)
            let x = try operand(0, "data")
            guard let target = node.ints("shape") else { throw fail("missing required ints attribute 'shape'") }
            return [(x.dataType, try reshapeOutput(node, input: x.shape, target: target))]

        case .concat:
            guard !node.inputs.isEmpty else { throw fail("expected at least one input") }
            let first = try operand(0, "input 0")
            guard let rawAxis = node.attributes["axis"]?.int else { throw fail("missing required int attribute 'axis'") }
            let axis = try node.normalizedAxis(rawAxis, rank: first.shape.count)
            var shape = first.shape
            for index in 1..<node.inputs.count {
                let other = try operand(index, "input \(index)")
                guard other.dataType == first.dataType, other.shape.count == shape.count else {
                    throw fail("input \(index) \(other.shape) \(other.dataType) does not match input 0 \(first.shape) \(first.dataType)")
                }
                for d in 0..<shape.count where d != axis {
                    guard let merged = Dim.broadcast(shape[d], other.shape[d]), shape[d] == other.shape[d] || shape[d] == -1 || other.shape[d] == -1 else {
                        throw fail("input \(index) shape \(other.shape) differs from \(shape) outside axis \(axis)")
                    }
                    shape[d] = merged
                }
                shape[axis] = (shape[axis] == -1 || other.shape[axis] == -1) ? -1 : shape[axis] + other.shape[axis]
            }
            return [(first.dataType, shape)]

        case .pad:
            try requireInputCount(1...1)
            let x = try operand(0, "data")
            let mode = node.attributes["mode"]?.string ?? "constant"
            guard mode == "constant" else { throw fail("mode '\(mode)' is not supported (expected constant)") }
            let pads = node.ints("pads") ?? []
            guard pads.count == 2 * x.shape.count, pads.allSatisfy({ $0 >= 0 && $0 <= Dim.limit }) else {
                throw fail("pads must be \(2 * x.shape.count) non-negative values [begins..., ends...], got \(pads)")
            }
            let rank = x.shape.count
            return [(x.dataType, (0..<rank).map { x.shape[$0] == -1 ? -1 : x.shape[$0] + pads[$0] + pads[$0 + rank] })]

        case .quantizeLinear, .dequantizeLinear:
            try requireInputCount(2...3)
            let x = try operand(0, "x")
            let scale = try requireInitializer(1, "scale")
            guard scale.storage.dataType == .float32 else { throw fail("scale must be float32, got \(scale.storage.dataType)") }
            var zeroPointType: DataType = .uint8
            var zeroPoint: Initializer?
            if node.inputs.count == 3 && !node.inputs[2].isEmpty {
                zeroPoint = try requireInitializer(2, "zero point")
                zeroPointType = zeroPoint!.storage.dataType
                guard zeroPoint!.storage.count == scale.storage.count else {
                    throw fail("zero point has \(zeroPoint!.storage.count) values but scale has \(scale.storage.count)")
                }
            }
            guard scale.storage.floats.allSatisfy({ $0 > 0 && $0.isFinite }) else { throw fail("scales must be positive and finite") }
            if scale.shape.count > 1 || (scale.shape.count == 1 && scale.shape[0] != 1) {
                guard scale.shape.count == 1 else { throw fail("scale must be a scalar or 1-D, got shape \(scale.shape)") }
                let axis = try node.normalizedAxis(node.int("axis", default: 1), rank: x.shape.count)
                if x.shape[axis] != -1 && x.shape[axis] != scale.shape[0] {
                    throw fail("per-axis scale has \(scale.shape[0]) values but axis \(axis) of \(x.shape) has \(x.shape[axis])")
                }
            }
            if node.op == .quantizeLinear {
                try requireFloat(x, "x")
                guard zeroPointType == .int8 || zeroPointType == .uint8 else {
                    throw fail("zero point must be int8 or uint8, got \(zeroPointType)")
                }
                return [(zeroPointType, x.shape)]
            }
            guard [.int8, .uint8, .int32].contains(x.dataType) else { throw fail("x must be int8, uint8 or int32, got \(x.dataType)") }
            if zeroPoint != nil && zeroPointType != x.dataType {
                throw fail("zero point type \(zeroPointType) differs from x type \(x.dataType)")
            }
            return [(.float32, x.shape)]
        }
    }

    static func windowOutput(_ node: Node, input: [Int], kernel: [Int],
                             window: (strides: [Int], pads: [Int], dilations: [Int])) throws -> [Int] {
        try (0..<2).map { axis in
            guard input[axis] != -1 else { return -1 }
            let extent = input[axis] + window.pads[axis] + window.pads[axis + 2]
            let dilated = (kernel[axis] - 1) * window.dilations[axis] + 1
            guard extent >= dilated else {
                throw GraphValidationError(node: node, "kernel \(kernel) (dilated \(dilated)) is larger than padded input \(input) on axis \(axis + 2)")
            }
            return (extent - dilated) / window.strides[axis] + 1
        }
    }

    /// ONNX Reshape: `0` copies the input dimension (allowzero 0), one `-1` is inferred from the element count.
    static func reshapeOutput(_ node: Node, input: [Int], target: [Int]) throws -> [Int] {
        func fail(_ message: String) -> GraphValidationError { GraphValidationError(node: node, message) }
        guard node.int("allowzero", default: 0) == 0 else { throw fail("allowzero 1 is not supported") }
        guard target.filter({ $0 == -1 }).count <= 1, target.allSatisfy({ $0 >= -1 }), Dim.elementCount(target) != nil else {
            throw fail("shape \(target) may hold at most one -1, no other negative value, and must not be too large")
        }
        var resolved: [Int] = []
        var inferredIndex: Int?
        for (index, value) in target.enumerated() {
            if value == 0 {
                guard index < input.count else { throw fail("shape \(target) copies dimension \(index) that input \(input) lacks") }
                resolved.append(input[index])
            } else {
                if value == -1 { inferredIndex = index }
                resolved.append(value)
            }
        }
        // Dynamic dims cancel when they were copied through 0 from the same input position.
        let copiedDynamic = target.enumerated().filter { $0.element == 0 && input[$0.offset] == -1 }.count
        let inputDynamic = input.filter { $0 == -1 }.count
        let inputStatic = input.filter { $0 != -1 }.reduce(1, *)
        guard let knownTarget = Dim.elementCount(resolved.enumerated().filter { $0.offset != inferredIndex && $0.element != -1 }.map(\.element)) else {
            throw fail("shape \(target) is too large")
        }
        if let inferredIndex {
            if inputDynamic > copiedDynamic {
                resolved[inferredIndex] = -1
            } else {
                guard knownTarget > 0, inputStatic % knownTarget == 0 else {
                    throw fail("cannot reshape \(input) (\(inputStatic) elements) to \(target)")
                }
                resolved[inferredIndex] = inputStatic / knownTarget
            }
        } else if inputDynamic == 0 && copiedDynamic == 0 && knownTarget != inputStatic {
            throw fail("cannot reshape \(input) (\(inputStatic) elements) to \(target) (\(knownTarget) elements)")
        }
        return resolved
    }

    /// numpy.matmul shape rule, with 1-D operands promoted and the promoted axis removed again.
    static func matMulShape(_ a: [Int], _ b: [Int]) -> [Int]? {
        guard !a.isEmpty, !b.isEmpty else { return nil }
        let a2 = a.count == 1 ? [1] + a : a, b2 = b.count == 1 ? b + [1] : b
        let k1 = a2[a2.count - 1], k2 = b2[b2.count - 2]
        guard k1 == k2 || k1 == -1 || k2 == -1 else { return nil }
        guard let batch = Dim.broadcastShapes(Array(a2.dropLast(2)), Array(b2.dropLast(2))) else { return nil }
        var shape = batch
        if a.count > 1 { shape.append(a2[a2.count - 2]) }
        if b.count > 1 { shape.append(b2[b2.count - 1]) }
        return shape
    }
}
