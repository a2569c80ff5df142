/// Reductions written with SIMD accumulators: a scalar `sum += x` loop cannot be vectorised (float addition is
/// not associative, so the compiler keeps the order), and these sit on the hot path of every backward step.
/// Planes are as small as 4×4, so each has a 16-lane step before the scalar tail.
enum VectorMath {
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
        var total = (a0 + a1).sum()
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
        var total = (a0 + a1).sum()
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
        var total = s0.sum(), product = d0.sum()
        while i < count { total += x[i]; product += x[i] * y[i]; i += 1 }
        return (total, product)
    }

    /// `Σ (x[i] − center)²`.
    @inline(__always)
    static func squaredDeviation(_ x: UnsafePointer<Float>, count: Int, center: Float) -> Float {
        var a0 = SIMD16<Float>()
        let c = SIMD16<Float>(repeating: center)
        var i = 0
        let raw = UnsafeRawPointer(x)
        while i + 16 <= count {
            let d = load(raw, i) - c
            a0 += d * d
            i += 16
        }
        var total = a0.sum()
        while i < count { let d = x[i] - center; total += d * d; i += 1 }
        return total
    }

    /// `y[i] += x[i]`.
    @inline(__always)
    static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}
