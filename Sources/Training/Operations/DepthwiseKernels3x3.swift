/// Single-pass 3×3 depthwise kernels over a zero-bordered plane: each output row reads its three input rows once
/// (instead of nine separate tap passes over the output row), four lanes at a time when the row allows.
enum DepthwiseKernels3x3 {
    /// `out[oy, ox] (+)= Σ_{ky,kx} w[ky, kx] · padded[oy·s + ky, ox·s + kx]`.
    @inline(__always)
    static func correlate(padded: UnsafePointer<Float>, paddedWidth: Int, weights: UnsafePointer<Float>,
                          output: UnsafeMutablePointer<Float>, outH: Int, outW: Int, stride: Int, accumulate: Bool) {
        let w0 = weights[0], w1 = weights[1], w2 = weights[2], w3 = weights[3], w4 = weights[4]
        let w5 = weights[5], w6 = weights[6], w7 = weights[7], w8 = weights[8]
        for oy in 0..<outH {
            let r0 = padded + oy * stride * paddedWidth, r1 = r0 + paddedWidth, r2 = r1 + paddedWidth
            let row = output + oy * outW
            var ox = 0
            if stride == 1 {
                let v0 = SIMD4(repeating: w0), v1 = SIMD4(repeating: w1), v2 = SIMD4(repeating: w2)
                let v3 = SIMD4(repeating: w3), v4 = SIMD4(repeating: w4), v5 = SIMD4(repeating: w5)
                let v6 = SIMD4(repeating: w6), v7 = SIMD4(repeating: w7), v8 = SIMD4(repeating: w8)
                @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD4<Float> {
                    UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
                }
                while ox + 4 <= outW {
                    var acc = accumulate ? load(row + ox) : SIMD4<Float>()
                    acc += v0 * load(r0 + ox); acc += v1 * load(r0 + ox + 1); acc += v2 * load(r0 + ox + 2)
                    acc += v3 * load(r1 + ox); acc += v4 * load(r1 + ox + 1); acc += v5 * load(r1 + ox + 2)
                    acc += v6 * load(r2 + ox); acc += v7 * load(r2 + ox + 1); acc += v8 * load(r2 + ox + 2)
                    UnsafeMutableRawPointer(row + ox).storeBytes(of: acc, as: SIMD4<Float>.self)
                    ox += 4
                }
            }
            while ox < outW {
                let x = ox * stride
                var acc: Float = accumulate ? row[ox] : 0
                acc += w0 * r0[x]; acc += w1 * r0[x + 1]; acc += w2 * r0[x + 2]
                acc += w3 * r1[x]; acc += w4 * r1[x + 1]; acc += w5 * r1[x + 2]
                acc += w6 * r2[x]; acc += w7 * r2[x + 1]; acc += w8 * r2[x + 2]
                row[ox] = acc
                ox += 1
            }
        }
    }

    /// `dW[ky, kx] += Σ_{oy,ox} dY[oy, ox] · padded[oy + ky, ox + kx]` (stride 1), nine vector accumulators.
    @inline(__always)
    static func weightGradient(padded: UnsafePointer<Float>, paddedWidth: Int, outputGradient: UnsafePointer<Float>,
                               outH: Int, outW: Int, into weightGradient: UnsafeMutablePointer<Float>) {
        var a0 = SIMD4<Float>(), a1 = SIMD4<Float>(), a2 = SIMD4<Float>(), a3 = SIMD4<Float>(), a4 = SIMD4<Float>()
        var a5 = SIMD4<Float>(), a6 = SIMD4<Float>(), a7 = SIMD4<Float>(), a8 = SIMD4<Float>()
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0, s4: Float = 0
        var s5: Float = 0, s6: Float = 0, s7: Float = 0, s8: Float = 0
        @inline(__always) func load(_ p: UnsafePointer<Float>) -> SIMD4<Float> {
            UnsafeRawPointer(p).loadUnaligned(as: SIMD4<Float>.self)
        }
        for oy in 0..<outH {
            let r0 = padded + oy * paddedWidth, r1 = r0 + paddedWidth, r2 = r1 + paddedWidth
            let dy = outputGradient + oy * outW
            var ox = 0
            while ox + 4 <= outW {
                let d = load(dy + ox)
                a0 += d * load(r0 + ox); a1 += d * load(r0 + ox + 1); a2 += d * load(r0 + ox + 2)
                a3 += d * load(r1 + ox); a4 += d * load(r1 + ox + 1); a5 += d * load(r1 + ox + 2)
                a6 += d * load(r2 + ox); a7 += d * load(r2 + ox + 1); a8 += d * load(r2 + ox + 2)
                ox += 4
            }
            while ox < outW {
                let d = dy[ox]
                s0 += d * r0[ox]; s1 += d * r0[ox + 1]; s2 += d * r0[ox + 2]
                s3 += d * r1[ox]; s4 += d * r1[ox + 1]; s5 += d * r1[ox + 2]
                s6 += d * r2[ox]; s7 += d * r2[ox + 1]; s8 += d * r2[ox + 2]
                ox += 1
            }
        }
        weightGradient[0] += a0.sum() + s0; weightGradient[1] += a1.sum() + s1; weightGradient[2] += a2.sum() + s2
        weightGradient[3] += a3.sum() + s3; weightGradient[4] += a4.sum() + s4; weightGradient[5] += a5.sum() + s5
        weightGradient[6] += a6.sum() + s6; weightGradient[7] += a7.sum() + s7; weightGradient[8] += a8.sum() + s8
    }

    /// Any stride, one pass over dY: each dY element adds its share to the nine weight gradients and scatters
    /// `w · dY` onto the padded input gradient (when given).
    @inline(__always)
    static func backwardScatter(padded: UnsafePointer<Float>, paddedGradient: UnsafeMutablePointer<Float>?, paddedWidth: Int,
                                weights: UnsafePointer<Float>, weightGradient: UnsafeMutablePointer<Float>?,
                                outputGradient: UnsafePointer<Float>, outH: Int, outW: Int, stride: Int) {
        let w0 = weights[0], w1 = weights[1], w2 = weights[2], w3 = weights[3], w4 = weights[4]
        let w5 = weights[5], w6 = weights[6], w7 = weights[7], w8 = weights[8]
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0, s4: Float = 0
        var s5: Float = 0, s6: Float = 0, s7: Float = 0, s8: Float = 0
        for oy in 0..<outH {
            let offset = oy * stride * paddedWidth
            let r0 = padded + offset, r1 = r0 + paddedWidth, r2 = r1 + paddedWidth
            let dy = outputGradient + oy * outW
            if weightGradient != nil {
                for ox in 0..<outW {
                    let d = dy[ox], x = ox * stride
                    s0 += d * r0[x]; s1 += d * r0[x + 1]; s2 += d * r0[x + 2]
                    s3 += d * r1[x]; s4 += d * r1[x + 1]; s5 += d * r1[x + 2]
                    s6 += d * r2[x]; s7 += d * r2[x + 1]; s8 += d * r2[x + 2]
                }
            }
            if let paddedGradient {
                let g0 = paddedGradient + offset, g1 = g0 + paddedWidth, g2 = g1 + paddedWidth
                for ox in 0..<outW {
                    let d = dy[ox], x = ox * stride
                    g0[x] += w0 * d; g0[x + 1] += w1 * d; g0[x + 2] += w2 * d
                    g1[x] += w3 * d; g1[x + 1] += w4 * d; g1[x + 2] += w5 * d
                    g2[x] += w6 * d; g2[x + 1] += w7 * d; g2[x + 2] += w8 * d
                }
            }
        }
        if let weightGradient {
            weightGradient[0] += s0; weightGradient[1] += s1; weightGradient[2] += s2
            weightGradient[3] += s3; weightGradient[4] += s4; weightGradient[5] += s5
            weightGradient[6] += s6; weightGradient[7] += s7; weightGradient[8] += s8
        }
    }
}
