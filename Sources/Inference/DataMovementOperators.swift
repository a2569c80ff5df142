import Graph
import Tensor

/// Flatten, Reshape, Identity and Dropout (inference): the same elements with the inferred output shape.
struct ReshapeOperator: FloatOperator {
    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        [try inputs.required(0).reshaped(outputShapes[0])]
    }
}

/// Concat along one axis: each input contributes a contiguous run per outer index.
struct ConcatOperator: FloatOperator {
    let axis: Int

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let shape = outputShapes[0]
        let axis = self.axis < 0 ? self.axis + shape.count : self.axis
        let outer = shape[..<axis].reduce(1, *), inner = shape[(axis + 1)...].reduce(1, *)
        var output: [Float] = []
        output.reserveCapacity(shape.reduce(1, *))
        let parts = try (0..<inputs.count).map { try inputs.required($0) }
        for o in 0..<outer {
            for part in parts {
                let run = part.shape[axis] * inner
                output.append(contentsOf: part.data[(o * run)..<((o + 1) * run)])
            }
        }
        return [Tensor(shape: shape, data: output)]
    }
}

/// Constant Pad with non-negative `pads` = [begin₀, begin₁, …, end₀, end₁, …].
struct PadOperator: FloatOperator {
    let pads: [Int]
    let value: Float

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let x = try inputs.required(0)
        let shape = outputShapes[0], rank = shape.count
        var output = context.buffer(count: shape.reduce(1, *), repeating: value)
        guard x.count > 0 else { return [Tensor(shape: shape, data: output)] }
        let outStrides = rowMajorStrides(shape)
        let rowLength = x.shape[rank - 1]
        let rows = x.count / max(rowLength, 1)
        var index = [Int](repeating: 0, count: rank - 1)
        for row in 0..<rows {
            var offset = pads[rank - 1]
            for axis in 0..<(rank - 1) { offset += (index[axis] + pads[axis]) * outStrides[axis] }
            for i in 0..<rowLength { output[offset + i] = x.data[row * rowLength + i] }
            var axis = rank - 2
            while axis >= 0 {
                index[axis] += 1
                if index[axis] < x.shape[axis] { break }
                index[axis] = 0
                axis -= 1
            }
        }
        return [Tensor(shape: shape, data: output)]
    }
}

/// QuantizeLinear / DequantizeLinear, per tensor or per axis. Quantize rounds half to even and saturates to the
/// zero point's type (ONNX); quantized values are carried as floats holding integers.
/// qatflow's `bits` attribute (docs/quantization.md) narrows the range: `[0, 2^b − 1]` for uint8 and the
/// narrow symmetric `[−(2^(b−1) − 1), 2^(b−1) − 1]` for int8 when b < 8; with b = 8 the ONNX ranges hold.
struct AffineQuantizationOperator: FloatOperator {
    let quantize: Bool
    let scales: [Float]
    let zeroPoints: [Float]
    let zeroPointType: DataType
    let axis: Int
    let bits: Int

    var range: (Float, Float) {
        if zeroPointType == .int8 {
            return bits >= 8 ? (-128, 127) : (-Float((1 << (bits - 1)) - 1), Float((1 << (bits - 1)) - 1))
        }
        return (0, Float((1 << min(bits, 8)) - 1))
    }

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        var x = try inputs.take(0)
        let perAxis = scales.count > 1
        let length = perAxis ? x.shape[axis] : 1
        let inner = perAxis ? x.shape[(axis + 1)...].reduce(1, *) : max(x.count, 1)
        let (low, high) = range
        let quantize = self.quantize
        for i in 0..<x.count {
            let channel = perAxis ? (i / inner) % length : 0
            let scale = scales[channel], zeroPoint = zeroPoints[channel]
            if quantize {
                let q = (x.data[i] / scale).rounded(.toNearestOrEven) + zeroPoint
                x.data[i] = q.isNaN ? zeroPoint : min(max(q, low), high)
            } else {
                x.data[i] = (x.data[i] - zeroPoint) * scale
            }
        }
        return [x]
    }
}
