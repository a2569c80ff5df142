/// Reductions written with SIMD accumulators: a scalar `sum += x` loop cannot be vectorised (float addition is
/// not associative, so the compiler keeps the order), and these sit on the hot path of every backward step.
enum VectorMath {
    @inline(__always)
    static func sum(_ x: UnsafePointer<Float>, count: Int) -> Float {
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>()
        var i = 0
        let raw = UnsafeRawPointer(x)
        while i + 32 <= count {
            a0 += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            a1 += raw.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
            i += 32
        }
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
            a0 += rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) * ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
            a1 += rx.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self) * ry.loadUnaligned(fromByteOffset: (i + 16) * 4, as: SIMD16<Float>.self)
            i += 32
        }
        var total = (a0 + a1).sum()
        while i < count { total += x[i] * y[i]; i += 1 }
        return total
    }

    /// `Σ (x[i] − center)²`.
    @inline(__always)
    static func squaredDeviation(_ x: UnsafePointer<Float>, count: Int, center: Float) -> Float {
        var a0 = SIMD16<Float>()
        let c = SIMD16<Float>(repeating: center)
        var i = 0
        let raw = UnsafeRawPointer(x)
        while i + 16 <= count {
            let d = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self) - c
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
