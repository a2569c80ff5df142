import Tensor
import Training

/// How the gradient crosses a fake-quantizer (the straight-through estimator).
public enum StraightThroughEstimator: String, Sendable, CaseIterable {
    /// The gradient passes where the value fell inside the grid and is zero where it was clipped (PyTorch, LSQ).
    case clipped
    /// The gradient passes everywhere, clipped or not (MNN's behaviour; offered to compare).
    case identity
}

/// The differentiable operations of quantization-aware training, written on the training engine's tape.
///
/// Every forward rounds exactly like `AffineQuantization.quantize` (divide by the scale, round half to even,
/// add the zero point, saturate), which is also what the float executor does for a QuantizeLinear node: the
/// model trained here and the exported QDQ graph see the same grid values.
public enum FakeQuantizeOperations {
    /// `dequantize(quantize(x))` with one grid for the whole tensor.
    public static func activation(_ x: Variable, grid: AffineQuantization, estimator: StraightThroughEstimator,
                                  context: ForwardContext) -> Variable {
        let count = x.value.count, bounds = GridBounds(grid)
        let output = fakeQuantized(x.value.data, bounds: bounds, threads: context.threads)
        let result = Variable(Tensor(shape: x.shape, data: output), requiresGradient: context.needsGradient(x))
        guard result.requiresGradient else { return result }
        context.record(result) { [threads = context.threads] in
            if estimator == .identity {
                x.addGradient(result.gradient)
                return
            }
            x.writeGradient { dx, fresh in
                x.value.data.withUnsafeBufferPointer { input in
                    result.gradient.withUnsafeBufferPointer { dy in
                        let xs = Parallel.SharedPointer(input.baseAddress!), dys = Parallel.SharedPointer(dy.baseAddress!)
                        let dxs = Parallel.SharedMutablePointer(dx)
                        Parallel.forEachChunk(count: count, threads: workers(count, threads)) { range in
                            bounds.maskGradient(x: xs.base, dy: dys.base, dx: dxs.base, range: range, fresh: fresh)
                        }
                    }
                }
            }
        }
        return result
    }

    /// LSQ (Esser et al. 2020) with a learned zero point (LSQ+): `x̂ = (clamp(round(x/s) + round(z)) − round(z))·s`
    /// with `scale` (s) and `zeroPoint` (z) one-element parameters. Gradients: to x the clipped straight-through
    /// estimator; to s `round(x/s) − x/s` inside the grid and the clamp bound minus z outside, to z `−s` outside
    /// (zero inside), both multiplied by `gradientScale` (the paper's `1/√(N·Qp)`).
    public static func learnedActivation(_ x: Variable, scale: Variable, zeroPoint: Variable, bits: Int, gradientScale: Float,
                                         context: ForwardContext) -> Variable {
        let grid = learnedGrid(scale: scale.value.data[0], zeroPoint: zeroPoint.value.data[0], bits: bits)
        let count = x.value.count, bounds = GridBounds(grid)
        let output = fakeQuantized(x.value.data, bounds: bounds, threads: context.threads)
        let result = Variable(Tensor(shape: x.shape, data: output), requiresGradient: context.needsGradient(x, scale, zeroPoint))
        guard result.requiresGradient else { return result }
        context.record(result) { [threads = context.threads] in
            var scaleGradient: Double = 0, zeroPointGradient: Double = 0
            let s = grid.scale, z = Float(grid.zeroPoint)
            let belowValue = Float(grid.qmin) - z, aboveValue = Float(grid.qmax) - z
            x.writeGradient { dx, fresh in
                x.value.data.withUnsafeBufferPointer { input in
                    result.gradient.withUnsafeBufferPointer { dy in
                        // The scale and zero-point sums are reduced per chunk, then added in chunk order.
                        let chunks = workers(count, threads)
                        var partial = [Double](repeating: 0, count: chunks * 2)
                        let xs = Parallel.SharedPointer(input.baseAddress!), dys = Parallel.SharedPointer(dy.baseAddress!)
                        let dxs = Parallel.SharedMutablePointer(dx)
                        partial.withUnsafeMutableBufferPointer { sums in
                            let sink = Parallel.SharedMutablePointer(sums.baseAddress!)
                            Parallel.forEach(count: chunks, threads: chunks) { worker in
                                var ds: Double = 0, dz: Double = 0
                                for i in Parallel.chunk(worker, of: chunks, count: count) {
                                    let scaled = xs.base[i] / s
                                    let q = scaled.rounded(.toNearestOrEven) + z
                                    let g = dys.base[i]
                                    let passed: Float
                                    if q < Float(grid.qmin) {
                                        passed = 0; ds += Double(g * belowValue); dz -= Double(g * s)
                                    } else if q > Float(grid.qmax) {
                                        passed = 0; ds += Double(g * aboveValue); dz -= Double(g * s)
                                    } else {
                                        passed = g; ds += Double(g * (scaled.rounded(.toNearestOrEven) - scaled))
                                    }
                                    dxs.base[i] = fresh ? passed : dxs.base[i] + passed
                                }
                                sink.base[worker * 2] = ds
                                sink.base[worker * 2 + 1] = dz
                            }
                        }
                        for worker in 0..<chunks {
                            scaleGradient += partial[worker * 2]
                            zeroPointGradient += partial[worker * 2 + 1]
                        }
                    }
                }
            }
            // The grid uses |scale| (floored at 1e-8) and the zero point clamped to [0, qmax]: the gradient reaching
            // the raw parameters carries the sign of the scale and vanishes where the floor or the clamp holds.
            let rawScale = scale.value.data[0], rawZeroPoint = zeroPoint.value.data[0]
            let scaleFactor: Float = abs(rawScale) < 1e-8 ? 0 : (rawScale < 0 ? -1 : 1)
            let zeroPointFactor: Float = rawZeroPoint >= Float(grid.qmin) && rawZeroPoint <= Float(grid.qmax) ? 1 : 0
            if scale.requiresGradient { scale.accumulateGradient { $0[0] += Float(scaleGradient) * gradientScale * scaleFactor } }
            if zeroPoint.requiresGradient { zeroPoint.accumulateGradient { $0[0] += Float(zeroPointGradient) * gradientScale * zeroPointFactor } }
        }
        return result
    }

    /// The grid a learned (scale, zero point) pair stands for: scale kept positive, zero point rounded into range.
    public static func learnedGrid(scale: Float, zeroPoint: Float, bits: Int) -> AffineQuantization {
        let qmax = (1 << bits) - 1
        let clamped = zeroPoint.isFinite ? min(max(zeroPoint, 0), Float(qmax)) : 0
        let zero = Int(clamped.rounded(.toNearestOrEven))
        return AffineQuantization(scale: max(abs(scale), 1e-8), zeroPoint: zero, qmin: 0, qmax: qmax)
    }

    /// Per-output-channel fake quantization of `weight · multiplier[c]` (channel = leading axis): the weight a
    /// BN-folded convolution really computes with is `W·γ/σ`, and that product is what gets the grid. The
    /// scales come from `grids` (one per channel). Gradient: `dW = dŴ · multiplier[c]` where the value was
    /// inside the grid (`estimator` decides for clipped values).
    public static func weight(_ weight: Variable, multiplier: [Float]?, grids: [AffineQuantization],
                              estimator: StraightThroughEstimator, context: ForwardContext) -> Variable {
        let channels = grids.count, perChannel = weight.value.count / channels
        let folded = foldedValues(weight.value.data, multiplier: multiplier, channels: channels)
        let result = Variable(Tensor(shape: weight.shape, data: perChannelFakeQuantized(folded, grids: grids)),
                              requiresGradient: context.needsGradient(weight))
        guard result.requiresGradient else { return result }
        context.record(result) {
            weight.accumulateGradient { dw in
                result.gradient.withUnsafeBufferPointer { dy in
                    for c in 0..<channels {
                        let factor = multiplier?[c] ?? 1, bounds = GridBounds(grids[c])
                        for i in (c * perChannel)..<((c + 1) * perChannel) {
                            let inside = estimator == .identity || bounds.contains(folded[i])
                            if inside { dw[i] += dy[i] * factor }
                        }
                    }
                }
            }
        }
        return result
    }

    /// LSQ for weights (Esser et al. 2020): `weight · multiplier[c]` on a symmetric narrow grid whose step
    /// size is the learned `scales[c]` (one per output channel; |s| floored at 1e-8 is used, as for activations).
    /// Gradients: to the weight as `weight(…)`; to `s_c` the sum over the channel of `dŴ · (round(v/s) − v/s)`
    /// inside the grid and `dŴ · (±qmax)` where `v` saturated, times the paper's `1/√(n_c·qmax)` with `n_c`
    /// the channel's weight count.
    public static func learnedWeight(_ weight: Variable, multiplier: [Float]?, scales: Variable, bits: Int,
                                     estimator: StraightThroughEstimator, context: ForwardContext) -> Variable {
        let grids = learnedWeightGrids(scales.value.data, bits: bits)
        let channels = grids.count, perChannel = weight.value.count / channels
        let folded = foldedValues(weight.value.data, multiplier: multiplier, channels: channels)
        let result = Variable(Tensor(shape: weight.shape, data: perChannelFakeQuantized(folded, grids: grids)),
                              requiresGradient: context.needsGradient(weight, scales))
        guard result.requiresGradient else { return result }
        context.record(result) {
            let qmax = Float(grids[0].qmax)
            let gradientScale = 1 / (Float(perChannel) * qmax).squareRoot()
            var scaleGradient = [Double](repeating: 0, count: channels)
            var weightGradient = [Float](repeating: 0, count: weight.value.count)
            result.gradient.withUnsafeBufferPointer { dy in
                for c in 0..<channels {
                    let s = grids[c].scale, factor = multiplier?[c] ?? 1
                    var ds: Double = 0
                    for i in (c * perChannel)..<((c + 1) * perChannel) {
                        let scaled = folded[i] / s, q = scaled.rounded(.toNearestOrEven)
                        if q < -qmax {
                            ds -= Double(dy[i] * qmax)
                            if estimator == .identity { weightGradient[i] = dy[i] * factor }
                        } else if q > qmax {
                            ds += Double(dy[i] * qmax)
                            if estimator == .identity { weightGradient[i] = dy[i] * factor }
                        } else {
                            ds += Double(dy[i] * (q - scaled))
                            weightGradient[i] = dy[i] * factor
                        }
                    }
                    scaleGradient[c] = ds
                }
            }
            if weight.requiresGradient { weight.addGradient(weightGradient) }
            if scales.requiresGradient {
                // The grid uses |s| (floored): the raw parameter's gradient carries its sign and stops at the floor.
                let raw = scales.value.data
                scales.accumulateGradient { g in
                    for c in 0..<channels where abs(raw[c]) >= 1e-8 {
                        g[c] += Float(scaleGradient[c]) * gradientScale * (raw[c] < 0 ? -1 : 1)
                    }
                }
            }
        }
        return result
    }

    /// The symmetric per-channel grids learned step sizes stand for.
    public static func learnedWeightGrids(_ scales: [Float], bits: Int) -> [AffineQuantization] {
        let qmax = (1 << (bits - 1)) - 1
        return scales.map { AffineQuantization(scale: $0.isFinite ? max(abs($0), 1e-8) : 1, zeroPoint: 0, qmin: -qmax, qmax: qmax) }
    }

    /// `values` (channel-major, one grid per channel) on their grids.
    static func perChannelFakeQuantized(_ values: [Float], grids: [AffineQuantization]) -> [Float] {
        let perChannel = values.count / grids.count
        var output = [Float](repeating: 0, count: values.count)
        values.withUnsafeBufferPointer { source in
            output.withUnsafeMutableBufferPointer { target in
                for (c, grid) in grids.enumerated() {
                    GridBounds(grid).fakeQuantize(source.baseAddress!, into: target.baseAddress!,
                                                  range: (c * perChannel)..<((c + 1) * perChannel))
                }
            }
        }
        return output
    }

    /// `weight[c, …] · multiplier[c]` with the same float operations `GraphTransforms.foldBatchNormalization`
    /// uses, so training quantizes exactly the weights that export will.
    public static func foldedValues(_ values: [Float], multiplier: [Float]?, channels: Int) -> [Float] {
        guard let multiplier else { return values }
        var folded = values
        let perChannel = values.count / channels
        for c in 0..<channels {
            for i in (c * perChannel)..<((c + 1) * perChannel) { folded[i] *= multiplier[c] }
        }
        return folded
    }

    /// A per-channel vector `value[c] = Σ_k coefficient_k[c] · source_k[c]` (already computed: `value`) of
    /// one-per-channel variables, e.g. a frozen BatchNorm's β and the convolution bias, as one variable: the
    /// folded convolution's bias. The gradient of each source is the vector's gradient times its coefficient.
    public static func channelCombination(_ value: [Float], sources: [(variable: Variable, coefficient: [Float])],
                                          context: ForwardContext) -> Variable {
        let result = Variable(Tensor(shape: [value.count], data: value),
                              requiresGradient: sources.contains { context.needsGradient($0.variable) })
        guard result.requiresGradient else { return result }
        context.record(result) {
            let gradient = result.gradient
            for (variable, coefficient) in sources where variable.requiresGradient {
                variable.accumulateGradient { g in for c in 0..<value.count { g[c] += gradient[c] * coefficient[c] } }
            }
        }
        return result
    }

    /// Every element of `values` on the grid, the chunks spread over `threads`.
    static func fakeQuantized(_ values: [Float], bounds: GridBounds, threads: Int) -> [Float] {
        let count = values.count
        var output = [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        values.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                let source = Parallel.SharedPointer(input.baseAddress!), target = Parallel.SharedMutablePointer(out.baseAddress!)
                Parallel.forEachChunk(count: count, threads: workers(count, threads)) { range in
                    bounds.fakeQuantize(source.base, into: target.base, range: range)
                }
            }
        }
        return output
    }

    /// Smallest and largest element (NaN-free input assumed; a NaN loss stops training anyway).
    public static func minMax(_ x: Tensor, threads: Int) -> (low: Float, high: Float) {
        let count = x.count
        guard count > 0 else { return (0, 0) }
        let chunks = workers(count, threads)
        var partial = [Float](repeating: 0, count: chunks * 2)
        x.data.withUnsafeBufferPointer { input in
            partial.withUnsafeMutableBufferPointer { sums in
                let source = Parallel.SharedPointer(input.baseAddress!), sink = Parallel.SharedMutablePointer(sums.baseAddress!)
                Parallel.forEach(count: chunks, threads: chunks) { worker in
                    let range = Parallel.chunk(worker, of: chunks, count: count)
                    let (l, h) = FakeQuantizeKernel.minMax(source.base + range.lowerBound, count: range.count)
                    sink.base[worker * 2] = l
                    sink.base[worker * 2 + 1] = h
                }
            }
        }
        var low = Float.infinity, high = -Float.infinity
        for worker in 0..<chunks { low = min(low, partial[worker * 2]); high = max(high, partial[worker * 2 + 1]) }
        return (low, high)
    }

    /// Worth splitting a streaming pass only for large tensors.
    static func workers(_ count: Int, _ threads: Int) -> Int { count >= 65_536 ? max(1, threads) : 1 }
}

/// A grid prepared for vector loops: the same arithmetic as `AffineQuantization.quantize` / `dequantize`.
struct GridBounds: Sendable {
    let scale: Float, zeroPoint: Float, qmin: Float, qmax: Float

    init(_ grid: AffineQuantization) {
        scale = grid.scale
        zeroPoint = Float(grid.zeroPoint)
        qmin = Float(grid.qmin)
        qmax = Float(grid.qmax)
    }

    /// Whether `x` quantizes without saturating.
    @inline(__always) func contains(_ x: Float) -> Bool {
        let q = (x / scale).rounded(.toNearestOrEven) + zeroPoint
        return q >= qmin && q <= qmax
    }

    func fakeQuantize(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, range: Range<Int>) {
        FakeQuantizeKernel.apply(x + range.lowerBound, into: y + range.lowerBound, count: range.count, scale: scale,
                                 zeroPoint: zeroPoint, qmin: qmin, qmax: qmax)
    }

    /// `dx (+)= dy` where `x` was inside the grid, else 0.
    func maskGradient(x: UnsafePointer<Float>, dy: UnsafePointer<Float>, dx: UnsafeMutablePointer<Float>, range: Range<Int>, fresh: Bool) {
        FakeQuantizeKernel.maskGradient(x: x + range.lowerBound, dy: dy + range.lowerBound, dx: dx + range.lowerBound,
                                        count: range.count, scale: scale, zeroPoint: zeroPoint, qmin: qmin, qmax: qmax,
                                        accumulate: !fresh)
    }
}
