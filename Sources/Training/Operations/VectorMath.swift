/// Reductions written with SIMD accumulators: a scalar `sum += x` loop cannot be vectorised (float addition is
/// not associative, so the compiler keeps the order), and these sit on the hot path of every backward step.
/// Planes are as small as 4×4, so each has a 16-lane step before the scalar tail.
enum VectorMath {
    /// Tree reduction of one vector (the generic `SIMD.sum()` is an out-of-line lane loop, called per plane).
    @inline(__always)
    static func horizontalSum(_ v: SIMD16<Float>) -> Float {
        let eight = v.lowHalf + v.highHalf
        let four = eight.lowHalf + eight.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }

    @inline(__always)
    private static func load(_ p: UnsafeRawPointer, _ index: Int) -> SIMD16<Float> {
        p.loadUnaligned(fromByteOffset: index * 4, as: SIMD16<Float>.self)
    }

    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = 0
        let raw = UnsafeRawPointer(x)
        while i + 32 <= count {
            a0 += load(raw, i)
            a1 += load(raw, i + 16)
            i += 32
        }
        if i + 16 <= count { a0 += load(raw, i); i += 16 }
        var total = horizontalSum(a0 + a1)
        while i < count { total += x[i]; i += 1 }
        return total
    }

    /// `Σ x[i]·y[i]`.
    @inline(__always)
    static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count: Int) -> Float {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        while i + 32 <= count {
            a0 += load(rx, i) * load(ry, i)
            a1 += load(rx, i + 16) * load(ry, i + 16)
            i += 32
        }
        if i + 16 <= count { a0 += load(rx, i) * load(ry, i); i += 16 }
        var total = horizontalSum(a0 + a1)
        while i < count { total += x[i] * y[i]; i += 1 }
        return total
    }

    /// `(Σ x[i], Σ x[i]·y[i])` in one pass over `x`.
    @inline(__always)
    static func sumAndDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count: Int) -> (sum: Float, dot: Float) {
        var s0 = SIMD16<Float>(), d0 = SIMD16<Float>()
        var i = 0
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
        while i + 16 <= count {
            let xv = load(rx, i)
            s0 += xv
            d0 += xv * load(ry, i)
            i += 16
        }
        var total = horizontalSum(s0), product = horizontalSum(d0)
        while i < count { total += x[i]; product += x[i] * y[i]; i += 1 }
        return (total, product)
    }

    /// `(Σ (x[i] − shift), Σ (x[i] − shift)²)` in one pass: BN's mean and variance from a single read of x.
    /// With a shift near the mean (BN uses a value of the same channel) the variance `E[d²] − E[d]²` does not
    /// suffer the cancellation of the unshifted `E[x²] − E[x]²`.
    @inline(__always)
    static func shiftedSumAndSquares(_ x: UnsafePointer<Float>, count: Int, shift: Float) -> (sum: Float, squares: Float) {
        var s0 = SIMD16<Float>(), q0 = SIMD16<Float>()
        let sv = SIMD16<Float>(repeating: shift)
        var i = 0
        let raw = UnsafeRawPointer(x)
        while i + 16 <= count {
            let d = load(raw, i) - sv
            s0 += d
            q0 += d * d
            i += 16
        }
        var total = horizontalSum(s0), squares = horizontalSum(q0)
        while i < count { let d = x[i] - shift; total += d; squares += d * d; i += 1 }
        return (total, squares)
    }

    /// `y[i] = a·x[i] + b`.
    @inline(__always)
    static func affine(_ x: UnsafePointer<Float>, scale a: Float, offset b: Float, into y: UnsafeMutablePointer<Float>, count: Int) {
        let av = SIMD16<Float>(repeating: a), bv = SIMD16<Float>(repeating: b)
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 16 <= count {
            ry.storeBytes(of: load(rx, i) * av + bv, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { y[i] = x[i] * a + b; i += 1 }
    }

    /// `z[i] (+)= a·x[i] + c·y[i] + b` (stores when `accumulate` is false).
    @inline(__always)
    static func combine(_ x: UnsafePointer<Float>, _ a: Float, _ y: UnsafePointer<Float>, _ c: Float, _ b: Float,
                        into z: UnsafeMutablePointer<Float>, count: Int, accumulate: Bool) {
        let av = SIMD16<Float>(repeating: a), cv = SIMD16<Float>(repeating: c), bv = SIMD16<Float>(repeating: b)
        let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y), rz = UnsafeMutableRawPointer(z)
        var i = 0
        while i + 16 <= count {
            var value = load(rx, i) * av + load(ry, i) * cv + bv
            if accumulate { value += load(UnsafeRawPointer(rz), i) }
            rz.storeBytes(of: value, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            let value = a * x[i] + c * y[i] + b
            z[i] = accumulate ? z[i] + value : value
            i += 1
        }
    }

    /// `y[i] = min(max(x[i], lower), upper)`.
    @inline(__always)
    static func clamp(_ x: UnsafePointer<Float>, lower: Float, upper: Float, into y: UnsafeMutablePointer<Float>, count: Int) {
        let lo = SIMD16<Float>(repeating: lower), hi = SIMD16<Float>(repeating: upper)
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 16 <= count {
            var value = load(rx, i)
            value.replace(with: lo, where: value .< lo)
            value.replace(with: hi, where: value .> hi)
            ry.storeBytes(of: value, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { y[i] = min(max(x[i], lower), upper); i += 1 }
    }

    /// `y[i] = min(max(a·x[i] + b, lower), upper)`: BN's affine map with a fused ReLU/Clip.
    @inline(__always)
    static func affineClamp(_ x: UnsafePointer<Float>, scale a: Float, offset b: Float, lower: Float, upper: Float,
                            into y: UnsafeMutablePointer<Float>, count: Int) {
        let av = SIMD16<Float>(repeating: a), bv = SIMD16<Float>(repeating: b)
        let lo = SIMD16<Float>(repeating: lower), hi = SIMD16<Float>(repeating: upper)
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 16 <= count {
            var value = load(rx, i) * av + bv
            value.replace(with: lo, where: value .< lo)
            value.replace(with: hi, where: value .> hi)
            ry.storeBytes(of: value, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count { y[i] = min(max(x[i] * a + b, lower), upper); i += 1 }
    }

    /// The gradient mask of a fused clamp, recomputed from the BN input: `dy[i]` where
    /// `lower < a·x[i] + b < upper`, else 0 (the same rule and arithmetic as the unfused clamp's backward).
    @inline(__always)
    private static func masked(_ dy: SIMD16<Float>, _ x: SIMD16<Float>, _ a: SIMD16<Float>, _ b: SIMD16<Float>,
                               _ lo: SIMD16<Float>, _ hi: SIMD16<Float>) -> SIMD16<Float> {
        let u = x * a + b
        return dy.replacing(with: 0, where: (u .<= lo) .| (u .>= hi))
    }

    /// `(Σ d[i], Σ d[i]·x[i])` with `d` = `dy` masked by the fused clamp.
    @inline(__always)
    static func maskedSumAndDot(_ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, scale a: Float, offset b: Float,
                                lower: Float, upper: Float, count: Int) -> (sum: Float, dot: Float) {
        let av = SIMD16<Float>(repeating: a), bv = SIMD16<Float>(repeating: b)
        let lo = SIMD16<Float>(repeating: lower), hi = SIMD16<Float>(repeating: upper)
        var s0 = SIMD16<Float>(), d0 = SIMD16<Float>()
        let rdy = UnsafeRawPointer(dy), rx = UnsafeRawPointer(x)
        var i = 0
        while i + 16 <= count {
            let xv = load(rx, i)
            let d = masked(load(rdy, i), xv, av, bv, lo, hi)
            s0 += d
            d0 += d * xv
            i += 16
        }
        var total = horizontalSum(s0), product = horizontalSum(d0)
        while i < count {
            let u = x[i] * a + b
            let d = u > lower && u < upper ? dy[i] : 0
            total += d; product += d * x[i]
            i += 1
        }
        return (total, product)
    }

    /// `dx[i] (+)= k·d[i] + c·x[i] + e` with `d` = `dy` masked by the fused clamp.
    @inline(__always)
    static func maskedCombine(_ dy: UnsafePointer<Float>, _ k: Float, _ x: UnsafePointer<Float>, _ c: Float, _ e: Float,
                              scale a: Float, offset b: Float, lower: Float, upper: Float,
                              into dx: UnsafeMutablePointer<Float>, count: Int, accumulate: Bool) {
        let av = SIMD16<Float>(repeating: a), bv = SIMD16<Float>(repeating: b)
        let lo = SIMD16<Float>(repeating: lower), hi = SIMD16<Float>(repeating: upper)
        let kv = SIMD16<Float>(repeating: k), cv = SIMD16<Float>(repeating: c), ev = SIMD16<Float>(repeating: e)
        let rdy = UnsafeRawPointer(dy), rx = UnsafeRawPointer(x), rdx = UnsafeMutableRawPointer(dx)
        var i = 0
        while i + 16 <= count {
            let xv = load(rx, i)
            var value = masked(load(rdy, i), xv, av, bv, lo, hi) * kv + xv * cv + ev
            if accumulate { value += load(UnsafeRawPointer(rdx), i) }
            rdx.storeBytes(of: value, toByteOffset: i * 4, as: SIMD16<Float>.self)
            i += 16
        }
        while i < count {
            let u = x[i] * a + b
            let d = u > lower && u < upper ? dy[i] : 0
            let value = k * d + c * x[i] + e
            dx[i] = accumulate ? dx[i] + value : value
            i += 1
        }
    }

    /// `y[i] += x[i]`.
    @inline(__always)
    static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}
