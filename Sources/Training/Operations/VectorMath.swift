/// Reductions written with SIMD accumulators: a scalar `sum += x` loop cannot be vectorised (float addition is
/// not associative, so the compiler keeps the order), and these sit on the hot path of every backward step.
/// Planes are as small as 4×4, so each has a 16-lane step before the scalar tail. (BatchNorm's passes are C kernels,
/// `BatchNormalizationKernel`: this build's baseline compiles SIMD16 to SSE2, which is slow on tensors in cache.)
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

    /// `y[i] += x[i]`.
    @inline(__always)
    static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { y[i] += x[i] }
    }
}
