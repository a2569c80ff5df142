import Tensor

/// Element-wise operations whose gradient is a mask or a pass-through: ReLU / Clip (ReLU6), Add, reshapes
/// (Flatten, Reshape, Identity) and Dropout.
enum Elementwise {
    /// `min(max(x, lower), upper)`; ReLU is `lower = 0, upper = +∞`. The gradient passes where the output lies
    /// strictly inside the bounds (PyTorch's hardtanh/ReLU rule: zero at the kinks).
    static func clamp(_ x: Variable, lower: Float, upper: Float, context: ForwardContext) -> Variable {
        var output = [Float](unsafeUninitializedCapacity: x.value.count) { _, initialized in initialized = x.value.count }
        x.value.data.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                let source = Parallel.SharedPointer(input.baseAddress!), target = Parallel.SharedMutablePointer(out.baseAddress!)
                Parallel.forEachChunk(count: input.count, threads: chunkThreads(input.count, context.threads)) { range in
                    VectorMath.clamp(source.base + range.lowerBound, lower: lower, upper: upper,
                                     into: target.base + range.lowerBound, count: range.count)
                }
            }
        }
        let result = Variable(Tensor(shape: x.shape, data: output), requiresGradient: context.needsGradient(x))
        guard result.requiresGradient else { return result }
        context.record(result) { [threads = context.threads] in
            x.writeGradient { inputGradient, fresh in
                result.value.data.withUnsafeBufferPointer { y in
                    result.gradient.withUnsafeBufferPointer { dy in
                        let ys = Parallel.SharedPointer(y.baseAddress!), dys = Parallel.SharedPointer(dy.baseAddress!)
                        let dx = Parallel.SharedMutablePointer(inputGradient)
                        Parallel.forEachChunk(count: y.count, threads: chunkThreads(y.count, threads)) { range in
                            clampGradient(y: ys.base, dy: dys.base, dx: dx.base, range: range, lower: lower, upper: upper, fresh: fresh)
                        }
                    }
                }
            }
        }
        return result
    }

    /// `dx (+)= dy` where `lower < y < upper`, else 0; 16 lanes at a time.
    @inline(__always)
    static func clampGradient(y: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>,
                              range: Range<Int>, lower: Float, upper: Float, fresh: Bool) {
        var i = range.lowerBound
        let lowerVector = SIMD16<Float>(repeating: lower), upperVector = SIMD16<Float>(repeating: upper)
        let ry = UnsafeRawPointer(y), rdy = UnsafeRawPointer(dy), rdx = UnsafeMutableRawPointer(dx)
        while i + 16 <= range.upperBound {
            let values = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            var gradient = rdy.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            gradient.replace(with: 0, where: (values .<= lowerVector) .| (values .>= upperVector))
            if !fresh { gradient += rdx.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) }
            rdx.storeBytes(of: gradient, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < range.upperBound {
            let passed = y[i] > lower && y[i] < upper ? dy[i] : 0
            dx[i] = fresh ? passed : dx[i] + passed
            i += 1
        }
    }

    /// `a + b` (same shapes).
    static func add(_ a: Variable, _ b: Variable, context: ForwardContext) -> Variable {
        precondition(a.shape == b.shape, "Add: shapes \(a.shape) and \(b.shape) differ (broadcasting is not supported in training)")
        var output = a.value.data
        output.withUnsafeMutableBufferPointer { out in
            b.value.data.withUnsafeBufferPointer { VectorMath.add($0.baseAddress!, into: out.baseAddress!, count: out.count) }
        }
        let result = Variable(Tensor(shape: a.shape, data: output), requiresGradient: context.needsGradient(a, b))
        guard result.requiresGradient else { return result }
        context.record(result) {
            for operand in [a, b] where operand.requiresGradient { operand.addGradient(result.gradient) }
        }
        return result
    }

    /// The same elements under another shape (Flatten, Reshape, Identity).
    static func reshape(_ x: Variable, to shape: [Int], context: ForwardContext) -> Variable {
        let result = Variable(x.value.reshaped(shape), requiresGradient: context.needsGradient(x))
        guard result.requiresGradient else { return result }
        context.record(result) { x.addGradient(result.gradient) }
        return result
    }

    /// Inverted dropout: in training each element is zeroed with probability `ratio` and the rest scaled by
    /// `1 / (1 − ratio)`, so evaluation is the identity.
    static func dropout(_ x: Variable, ratio: Float, context: ForwardContext) -> Variable {
        guard context.isTraining, ratio > 0 else { return reshape(x, to: x.shape, context: context) }
        let keep = 1 - ratio, scale = ratio < 1 ? 1 / keep : 0
        var mask = [Float](repeating: 0, count: x.value.count)
        for i in 0..<mask.count { mask[i] = context.random.nextUniform() < keep ? scale : 0 }
        var output = x.value.data
        for i in 0..<output.count { output[i] *= mask[i] }
        let result = Variable(Tensor(shape: x.shape, data: output), requiresGradient: context.needsGradient(x))
        guard result.requiresGradient else { return result }
        context.record(result) {
            x.accumulateGradient { gradient in
                result.gradient.withUnsafeBufferPointer { dy in
                    for i in 0..<mask.count { gradient[i] += dy[i] * mask[i] }
                }
            }
        }
        return result
    }

    /// Workers worth using for a streaming pass over `count` floats (threads cost more than tiny loops).
    static func chunkThreads(_ count: Int, _ threads: Int) -> Int {
        count >= 65_536 ? threads : 1
    }
}
