import Tensor

/// Fully connected layer as ONNX Gemm computes it for a constant weight: `Y = alpha·X·Wᵀ + beta·b`, with `W`
/// held as `[outFeatures, inFeatures]` (Gemm's `transB = 1` layout).
enum GemmOperation {
    static func forward(_ x: Variable, weight: Variable, bias: Variable?, alpha: Float, beta: Float,
                        context: ForwardContext) -> Variable {
        let (rows, depth) = (x.shape[0], x.shape[1])
        let outFeatures = weight.shape[0]
        precondition(weight.shape[1] == depth, "Linear: input \(x.shape) against weight \(weight.shape)")
        var output = [Float](repeating: 0, count: rows * outFeatures)
        x.value.data.withUnsafeBufferPointer { input in
            weight.value.data.withUnsafeBufferPointer { w in
                output.withUnsafeMutableBufferPointer { y in
                    GEMM.multiply(m: rows, n: outFeatures, k: depth, a: input.baseAddress!, lda: depth,
                                  b: w.baseAddress!, ldb: depth, transposeB: true, c: y.baseAddress!, ldc: outFeatures,
                                  threads: context.threads)
                }
            }
        }
        let biasValues = bias?.value.data
        for m in 0..<rows {
            for n in 0..<outFeatures {
                let index = m * outFeatures + n
                output[index] = alpha * output[index] + (biasValues.map { beta * $0[n] } ?? 0)
            }
        }
        let result = Variable(Tensor(shape: [rows, outFeatures], data: output), requiresGradient: context.needsGradient(x, weight, bias))
        guard result.requiresGradient else { return result }
        context.record(result) { [threads = context.threads] in
            let scaledGradient = alpha == 1 ? result.gradient : result.gradient.map { $0 * alpha }
            if let bias, bias.requiresGradient {
                bias.accumulateGradient { gradient in
                    for m in 0..<rows { for n in 0..<outFeatures { gradient[n] += beta * result.gradient[m * outFeatures + n] } }
                }
            }
            scaledGradient.withUnsafeBufferPointer { dY in
                if weight.requiresGradient {
                    weight.accumulateGradient { dW in
                        x.value.data.withUnsafeBufferPointer { input in
                            GEMM.multiply(m: outFeatures, n: depth, k: rows, a: dY.baseAddress!, lda: outFeatures, transposeA: true,
                                          b: input.baseAddress!, ldb: depth, c: dW, ldc: depth, accumulate: true, threads: threads)
                        }
                    }
                }
                if x.requiresGradient {
                    x.accumulateGradient { dX in
                        weight.value.data.withUnsafeBufferPointer { w in
                            GEMM.multiply(m: rows, n: depth, k: outFeatures, a: dY.baseAddress!, lda: outFeatures,
                                          b: w.baseAddress!, ldb: depth, c: dX, ldc: depth, accumulate: true, threads: threads)
                        }
                    }
                }
            }
        }
        return result
    }
}
