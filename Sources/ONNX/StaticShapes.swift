import Graph

/// Bounds on sizes read from a file. Why: a corrupt or hostile file can hold any int64, and shape arithmetic on
/// such values would overflow and trap; every size, pad and stride is checked against this before use.
enum DimensionLimits {
    static let maximumSize = Int(Int32.max)

    static func isValidSize(_ value: Int) -> Bool { value >= 0 && value <= maximumSize }

    /// The element count of a shape, or nil when a dimension is negative or the product overflows.
    static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { return nil }
            count = product
        }
        return count
    }
}

/// Output shapes of imported nodes, computed while importing so that `Shape` ops can be folded into constants.
///
/// Why the importer has its own: PyTorch exports `x.view(x.size(0), -1)` as Shape→Gather→Unsqueeze→Concat, and
/// turning that into a static Reshape needs every non-batch dimension of `x` at import time — before the graph
/// exists. `-1` is a dynamic dimension (the batch); `nil` means the importer could not tell, which only matters if
/// a `Shape` op later asks for it.
enum StaticShapes {
    static func output(of node: Node, inputShapes: [[Int]?]) -> [Int]? {
        let first = inputShapes.first ?? nil
        switch node.op {
        case .relu, .clip, .batchNormalization, .dropout, .identity, .softmax, .quantizeLinear, .dequantizeLinear:
            return first
        case .add, .mul:
            guard inputShapes.count == 2, let a = inputShapes[0], let b = inputShapes[1] else { return nil }
            return broadcast(a, b)
        case .conv:
            guard let x = first, x.count == 4, let w = inputShapes[1], w.count == 4 else { return nil }
            let spatial = window(x, kernel: [w[2], w[3]], node: node, ceil: false)
            return [x[0], w[0]] + spatial
        case .averagePool, .maxPool:
            guard let x = first, x.count == 4, let kernel = node.ints("kernel_shape"), kernel.count == 2 else { return nil }
            return [x[0], x[1]] + window(x, kernel: kernel, node: node, ceil: node.int("ceil_mode", default: 0) != 0)
        case .globalAveragePool:
            guard let x = first, x.count >= 2 else { return nil }
            return [x[0], x[1]] + Array(repeating: 1, count: x.count - 2)
        case .gemm:
            guard let a = first, a.count == 2, let b = inputShapes[1], b.count == 2 else { return nil }
            let rows = node.int("transA", default: 0) != 0 ? a[1] : a[0]
            let columns = node.int("transB", default: 0) != 0 ? b[0] : b[1]
            return [rows, columns]
        case .matMul:
            guard let a = first, a.count >= 2, let b = inputShapes[1], b.count == 2 else { return nil }
            return Array(a.dropLast()) + [b[1]]
        case .flatten:
            guard let x = first else { return nil }
            var axis = node.int("axis", default: 1)
            if axis < 0 { axis += x.count }
            guard axis >= 0 && axis <= x.count else { return nil }
            return [product(x[..<axis]), product(x[axis...])]
        case .reshape:
            guard let x = first, let target = node.ints("shape") else { return nil }
            return reshape(x, to: target)
        case .concat:
            let shapes = inputShapes.compactMap { $0 }
            guard shapes.count == inputShapes.count, var result = shapes.first else { return nil }
            var axis = node.int("axis", default: 0)
            if axis < 0 { axis += result.count }
            guard axis >= 0 && axis < result.count else { return nil }
            let sizes = shapes.map { $0.count > axis ? $0[axis] : -1 }
            result[axis] = sizes.contains(-1) ? -1 : sizes.reduce(0, +)
            return result
        case .pad:
            guard let x = first, let pads = node.ints("pads"), pads.count == 2 * x.count else { return nil }
            return x.indices.map { x[$0] < 0 ? -1 : x[$0] + pads[$0] + pads[$0 + x.count] }
        }
    }

    /// Product of dimensions; dynamic if any is dynamic.
    static func product<C: Collection>(_ dims: C) -> Int where C.Element == Int {
        dims.contains(-1) ? -1 : DimensionLimits.elementCount(Array(dims)) ?? -1
    }

    static func broadcast(_ a: [Int], _ b: [Int]) -> [Int] {
        let rank = max(a.count, b.count)
        let paddedA = Array(repeating: 1, count: rank - a.count) + a
        let paddedB = Array(repeating: 1, count: rank - b.count) + b
        return zip(paddedA, paddedB).map { x, y in
            if x == 1 { return y }
            if y == 1 { return x }
            return x == -1 ? y : x
        }
    }

    /// ONNX Reshape semantics (0 copies the input dimension, one -1 is inferred); a dynamic input dimension that
    /// is not copied by a 0 leaves the inferred dimension dynamic.
    static func reshape(_ input: [Int], to target: [Int]) -> [Int]? {
        var result = target.enumerated().map { index, value in value == 0 && index < input.count ? input[index] : value }
        let inferred = result.indices.filter { result[$0] == -1 && target[$0] == -1 }
        guard inferred.count <= 1 else { return nil }
        guard let slot = inferred.first else { return result }
        // Dimensions copied from the input (0 in target) cancel out, so a copied dynamic batch does not hide the rest.
        var remainingInput = input
        var known = 1
        for index in result.indices where index != slot {
            if target[index] == 0 && index < input.count {
                remainingInput[index] = 1
            } else {
                let (product, overflow) = known.multipliedReportingOverflow(by: result[index])
                guard !overflow else { return nil }
                known = product
            }
        }
        let total = product(remainingInput)
        result[slot] = total < 0 || known <= 0 ? -1 : total / known
        return result
    }

    private static func window(_ x: [Int], kernel: [Int], node: Node, ceil: Bool) -> [Int] {
        let strides = node.ints("strides") ?? [1, 1]
        let pads = node.ints("pads") ?? [0, 0, 0, 0]
        return (0..<2).map { axis in
            let size = x[axis + 2]
            guard size >= 0, strides.count == 2, pads.count == 4 else { return -1 }
            let padded = size + pads[axis] + pads[axis + 2] - kernel[axis]
            guard padded >= 0 else { return -1 }
            var count = (ceil ? (padded + strides[axis] - 1) / strides[axis] : padded / strides[axis]) + 1
            // As ONNX Runtime and PyTorch: with ceil_mode the last window must start inside the input or left padding.
            if ceil && (count - 1) * strides[axis] >= size + pads[axis] { count -= 1 }
            return count
        }
    }
}
