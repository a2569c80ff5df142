import Foundation
import Graph
import Tensor

/// Relu (0…∞) and Clip (min…max). NaN stays NaN, as in ONNX Runtime.
struct ClampOperator: FloatOperator {
    let minimum: Float
    let maximum: Float

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        var x = try inputs.take(0)
        let (low, high) = (minimum, maximum)
        x.data.withUnsafeMutableBufferPointer { buffer in
            for i in buffer.indices {
                let v = buffer[i]
                buffer[i] = v < low ? low : (v > high ? high : v)
            }
        }
        return [x]
    }
}

/// BatchNormalization in inference form: `y = (x − mean) / √(var + ε) · scale + B`, reduced to one
/// multiply-add per element with per-channel factors computed at prepare time.
struct BatchNormalizationOperator: FloatOperator {
    let multiplier: [Float]
    let shift: [Float]

    init(scale: [Float], offset: [Float], mean: [Float], variance: [Float], epsilon: Float) {
        multiplier = (0..<scale.count).map { scale[$0] / (variance[$0] + epsilon).squareRoot() }
        shift = (0..<scale.count).map { offset[$0] - mean[$0] * scale[$0] / (variance[$0] + epsilon).squareRoot() }
    }

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        var x = try inputs.take(0)
        let channels = x.shape[1]
        let spatial = x.shape.dropFirst(2).reduce(1, *)
        let planes = x.shape[0] * channels
        x.data.withUnsafeMutableBufferPointer { buffer in
            for plane in 0..<planes {
                let a = multiplier[plane % channels], b = shift[plane % channels]
                let base = buffer.baseAddress! + plane * spatial
                for i in 0..<spatial { base[i] = base[i] * a + b }
            }
        }
        return [x]
    }
}

/// Add and Mul with numpy (multidirectional) broadcasting.
struct BroadcastBinaryOperator: FloatOperator {
    enum Kind: Sendable { case add, multiply }
    let kind: Kind

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        var a = try inputs.take(0)
        let b = try inputs.required(1)
        let shape = outputShapes[0]
        let apply: (Float, Float) -> Float = kind == .add ? { $0 + $1 } : { $0 * $1 }
        if a.shape == b.shape {
            // The common case (residual Add): a direct loop per kind, so it vectorises instead of calling `apply`.
            let isAdd = kind == .add
            a.data.withUnsafeMutableBufferPointer { o in
                b.data.withUnsafeBufferPointer { bb in
                    if isAdd {
                        for i in o.indices { o[i] += bb[i] }
                    } else {
                        for i in o.indices { o[i] *= bb[i] }
                    }
                }
            }
            return [a]
        }
        let rank = shape.count
        func strides(_ s: [Int]) -> [Int] {
            let padded = [Int](repeating: 1, count: rank - s.count) + s
            let dense = rowMajorStrides(padded)
            return (0..<rank).map { padded[$0] == 1 ? 0 : dense[$0] }
        }
        let stridesA = strides(a.shape), stridesB = strides(b.shape)
        let total = shape.reduce(1, *)
        var out = context.buffer(count: total, repeating: 0)
        guard total > 0 else { return [Tensor(shape: shape, data: out)] }
        let inner = rank == 0 ? 1 : shape[rank - 1]
        let innerA = rank == 0 ? 0 : stridesA[rank - 1], innerB = rank == 0 ? 0 : stridesB[rank - 1]
        var index = [Int](repeating: 0, count: max(rank - 1, 0))
        var position = 0
        while position < total {
            var offsetA = 0, offsetB = 0
            for axis in 0..<index.count { offsetA += index[axis] * stridesA[axis]; offsetB += index[axis] * stridesB[axis] }
            for i in 0..<inner {
                out[position + i] = apply(a.data[offsetA + i * innerA], b.data[offsetB + i * innerB])
            }
            position += inner
            var axis = index.count - 1
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
        return [Tensor(shape: shape, data: out)]
    }
}

/// Softmax over one axis (opset 13 semantics), numerically stabilised by subtracting the maximum.
struct SoftmaxOperator: FloatOperator {
    let axis: Int

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        var x = try inputs.take(0)
        let axis = self.axis < 0 ? self.axis + x.rank : self.axis
        let outer = x.shape[..<axis].reduce(1, *), length = x.shape[axis], inner = x.shape[(axis + 1)...].reduce(1, *)
        x.data.withUnsafeMutableBufferPointer { buffer in
            for o in 0..<outer {
                for i in 0..<inner {
                    let base = buffer.baseAddress! + o * length * inner + i
                    var maximum = -Float.infinity
                    for j in 0..<length { maximum = max(maximum, base[j * inner]) }
                    var sum: Float = 0
                    for j in 0..<length {
                        let e = exp(base[j * inner] - maximum)
                        base[j * inner] = e
                        sum += e
                    }
                    for j in 0..<length { base[j * inner] /= sum }
                }
            }
        }
        return [x]
    }
}
