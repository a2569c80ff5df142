import Graph
import Tensor

/// Gemm: `Y = alpha · A' · B' + beta · C` with A' = transA ? Aᵀ : A, likewise B'; C broadcasts to [M, N].
/// When B is a constant (the fully-connected case) it is stored pre-transposed and pre-scaled by alpha, packed
/// as the GEMM's left operand of `Yᵀ = (alpha·B')ᵀ · A'ᵀ`, so it is packed once instead of per call.
struct GemmOperator: FloatOperator {
    let transposeA: Bool
    let transposeB: Bool
    let alpha: Float
    let beta: Float
    /// `(alpha · B')ᵀ` packed, N × K.
    let packedWeights: PackedMatrixA?
    let constantC: Tensor?

    init(node: Node, constantB: Initializer?, constantC: Initializer?) {
        transposeA = node.int("transA", default: 0) != 0
        transposeB = node.int("transB", default: 0) != 0
        alpha = node.float("alpha", default: 1)
        beta = node.float("beta", default: 1)
        self.constantC = constantC.map { Tensor(shape: $0.shape, data: $0.storage.floats) }
        if let constantB {
            let values = constantB.storage.floats.map { $0 * node.float("alpha", default: 1) }
            let (rows, columns) = (constantB.shape[0], constantB.shape[1])
            // B'ᵀ is B itself when transB (N × K row-major), else Bᵀ.
            let weightsTransposed = node.int("transB", default: 0) != 0
            let n = weightsTransposed ? rows : columns, k = weightsTransposed ? columns : rows
            packedWeights = values.withUnsafeBufferPointer {
                PackedMatrixA(rows: n, depth: k, a: $0.baseAddress!, lda: columns, transposed: !weightsTransposed)
            }
        } else {
            packedWeights = nil
        }
    }

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let threads = context.threads
        let a = try inputs.required(0)
        let (m, n) = (outputShapes[0][0], outputShapes[0][1])
        let k = transposeA ? a.shape[0] : a.shape[1]
        var y = context.buffer(count: m * n, repeating: 0)
        a.data.withUnsafeBufferPointer { aBuffer in
            y.withUnsafeMutableBufferPointer { yBuffer in
                if let packedWeights {
                    // Yᵀ (N × M) = packed (N × K) · A'ᵀ (K × M), then transpose into Y.
                    var transposed = [Float](repeating: 0, count: n * m)
                    transposed.withUnsafeMutableBufferPointer { t in
                        GEMM.multiply(packedA: packedWeights, n: m, b: aBuffer.baseAddress!, ldb: a.shape[1],
                                      transposeB: !transposeA, c: t.baseAddress!, ldc: m, threads: threads)
                    }
                    for i in 0..<m { for j in 0..<n { yBuffer[i * n + j] = transposed[j * m + i] } }
                } else if let b = inputs[1] {
                    b.data.withUnsafeBufferPointer { bBuffer in
                        GEMM.multiply(m: m, n: n, k: k, a: aBuffer.baseAddress!, lda: a.shape[1], transposeA: transposeA,
                                      b: bBuffer.baseAddress!, ldb: b.shape[1], transposeB: transposeB,
                                      c: yBuffer.baseAddress!, ldc: n, threads: threads)
                    }
                    if alpha != 1 { for i in yBuffer.indices { yBuffer[i] *= alpha } }
                }
            }
        }
        if beta != 0, let c = (inputs.count > 2 ? inputs[2] : nil) ?? constantC {
            // C is [], [N], [1, N], [M, 1], [M, N] or [1, 1].
            let padded = [Int](repeating: 1, count: 2 - c.shape.count) + c.shape
            let rowStride = padded[0] == 1 ? 0 : padded[1], columnStride = padded[1] == 1 ? 0 : 1
            for i in 0..<m { for j in 0..<n { y[i * n + j] += beta * c.data[i * rowStride + j * columnStride] } }
        }
        return [Tensor(shape: [m, n], data: y)]
    }
}

/// MatMul with numpy semantics: 2-D, batched with broadcast batch dimensions, and 1-D operands.
struct MatMulOperator: FloatOperator {
    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let threads = context.threads
        let a = try inputs.required(0), b = try inputs.required(1)
        let aShape = a.rank == 1 ? [1] + a.shape : a.shape
        let bShape = b.rank == 1 ? b.shape + [1] : b.shape
        let m = aShape[aShape.count - 2], k = aShape[aShape.count - 1], n = bShape[bShape.count - 1]
        let batchShape = Array(outputShapes[0].prefix(max(aShape.count, bShape.count) - 2))
        let rank = batchShape.count
        func batchStrides(_ shape: [Int], matrix: Int) -> [Int] {
            let dims = Array(shape.dropLast(2))
            let padded = [Int](repeating: 1, count: rank - dims.count) + dims
            let dense = rowMajorStrides(padded)
            return (0..<rank).map { padded[$0] == 1 ? 0 : dense[$0] * matrix }
        }
        let stridesA = batchStrides(aShape, matrix: m * k), stridesB = batchStrides(bShape, matrix: k * n)
        let batches = batchShape.reduce(1, *)
        var y = context.buffer(count: batches * m * n, repeating: 0)
        a.data.withUnsafeBufferPointer { aBuffer in
            b.data.withUnsafeBufferPointer { bBuffer in
                y.withUnsafeMutableBufferPointer { yBuffer in
                    for batch in 0..<batches {
                        var remainder = batch, offsetA = 0, offsetB = 0
                        for axis in stride(from: rank - 1, through: 0, by: -1) {
                            let index = remainder % batchShape[axis]
                            remainder /= batchShape[axis]
                            offsetA += index * stridesA[axis]
                            offsetB += index * stridesB[axis]
                        }
                        GEMM.multiply(m: m, n: n, k: k, a: aBuffer.baseAddress! + offsetA, lda: k,
                                      b: bBuffer.baseAddress! + offsetB, ldb: n,
                                      c: yBuffer.baseAddress! + batch * m * n, ldc: n, threads: threads)
                    }
                }
            }
        }
        return [Tensor(shape: outputShapes[0], data: y)]
    }
}
