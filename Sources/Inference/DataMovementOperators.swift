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

/// QuantizeLinear / DequantizeLinear, per tensor or per axis, or a per-tensor QuantizeLinear → DequantizeLinear
/// pair as one pass (`ExecutionPlanner` fuses them: the fake-quant simulation of a QDQ model has one pair per
/// activation). Quantize rounds half to even and saturates to the zero point's type (ONNX), NaN → the zero point;
/// quantized values are carried as floats holding integers.
/// qatflow's `bits` attribute (docs/quantization.md) narrows the range: `[0, 2^b − 1]` for uint8 and the
/// narrow symmetric `[−(2^(b−1) − 1), 2^(b−1) − 1]` for int8 when b < 8; with b = 8 the ONNX ranges hold.
struct AffineQuantizationOperator: FloatOperator {
    enum Mode: Sendable { case quantize, dequantize, quantizeDequantize }
    var mode: Mode
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
        if scales.count == 1 { return [try runPerTensor(inputs.required(0), context: context)] }
        precondition(mode != .quantizeDequantize, "only per-tensor pairs are fused")
        var x = try inputs.take(0)
        let length = x.shape[axis]
        let inner = x.shape[(axis + 1)...].reduce(1, *)
        let (low, high) = range
        for i in 0..<x.count {
            let channel = (i / inner) % length
            let scale = scales[channel], zeroPoint = zeroPoints[channel]
            if mode == .quantize {
                let q = (x.data[i] / scale).rounded(.toNearestOrEven) + zeroPoint
                x.data[i] = q.isNaN ? zeroPoint : min(max(q, low), high)
            } else {
                x.data[i] = (x.data[i] - zeroPoint) * scale
            }
        }
        return [x]
    }

    /// One grid: vector kernels over chunks of the tensor on the context's threads.
    private func runPerTensor(_ x: Tensor, context: ExecutionContext) -> Tensor {
        let count = x.count, scale = scales[0], zeroPoint = zeroPoints[0], (low, high) = range, mode = self.mode
        var output = context.uninitializedBuffer(count: count)
        x.data.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                guard count > 0 else { return }
                let source = Parallel.SharedPointer(input.baseAddress!), target = Parallel.SharedMutablePointer(out.baseAddress!)
                // Streaming passes: worth a second thread only for large tensors.
                Parallel.forEachChunk(count: count, threads: count >= 65_536 ? context.threads : 1) { range in
                    let from = source.base + range.lowerBound, to = target.base + range.lowerBound
                    if mode == .dequantize {
                        for i in 0..<range.count { to[i] = (from[i] - zeroPoint) * scale }
                    } else {
                        FakeQuantizeKernel.quantizeLinear(from, into: to, count: range.count, scale: scale, zeroPoint: zeroPoint,
                                                          qmin: low, qmax: high, dequantize: mode == .quantizeDequantize)
                    }
                }
            }
        }
        return Tensor(shape: x.shape, data: output)
    }
}
