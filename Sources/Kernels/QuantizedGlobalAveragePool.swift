import CKernels

/// Global average pooling, u8 NHWC `[batch, pixels, channels]` → u8 `[batch, channels]`:
/// `y = clamp(requantize(Σ_pixels x − pixels · z_in) + z_out)` with the single multiplier
/// `s_in / (s_out · pixels)`, so the division by the pixel count and the rescale round once, together.
public struct QuantizedGlobalAveragePool: Sendable {
    public let pixels: Int
    public let inputZeroPoint: UInt8
    public let multiplier: QuantizedMultiplier
    public let output: OutputQuantization

    /// `pixels` = H·W of the input (fixed at prepare time, since the multiplier depends on it).
    public init(pixels: Int, inputScale: Double, inputZeroPoint: UInt8, outputScale: Double,
                output: OutputQuantization) {
        // Sums stay below 2^30 (255 · 2^22), the bound under which every ISA path is bit-exact.
        precondition(pixels > 0 && pixels <= 1 << 22, "global average pool over \(pixels) pixels")
        precondition(inputScale > 0 && outputScale > 0, "pool scales must be positive")
        self.pixels = pixels
        self.inputZeroPoint = inputZeroPoint
        multiplier = QuantizedMultiplier(inputScale / (outputScale * Double(pixels)))
        self.output = output
    }

    /// `sums[c] = Σ_pixels x[pixel][c]` of one NHWC image (`pixels × channels` bytes at `input`), exact, for
    /// callers that rescale the sums themselves.
    public static func channelSums(_ input: UnsafePointer<UInt8>, pixels: Int, channels: Int,
                                   into sums: UnsafeMutablePointer<Int32>) {
        precondition(pixels >= 0 && pixels <= 1 << 23 && channels >= 0, "channel sums over \(pixels) pixels")
        qf_channel_sums_u8(pixels, channels, input, sums)
    }

    /// `y[i] = clamp(round((sums[i] − offset) · scale) + zeroPoint, output.min, output.max)` for `count` sums, in
    /// double, rounding half to even: the rescale of `channelSums` for callers that round once in double.
    public static func rescale(_ sums: UnsafePointer<Int32>, count: Int, offset: Int32, scale: Double,
                               output: OutputQuantization, into destination: UnsafeMutablePointer<UInt8>) {
        precondition(count >= 0, "rescale of \(count) sums")
        qf_rescale_sums_u8(count, sums, offset, scale, Double(output.zeroPoint), Double(output.min),
                           Double(output.max), destination)
    }

    public func run(input: UnsafeBufferPointer<UInt8>, batch: Int, channels: Int,
                    output destination: UnsafeMutableBufferPointer<UInt8>, isa: KernelISA = .best) {
        precondition(batch >= 0 && channels > 0, "pool needs channels")
        precondition(input.count >= batch * pixels * channels && destination.count >= batch * channels,
                     "pool buffers too small")
        guard batch > 0 else { return }
        isa.requireSupported()
        var parameters = qf_gavgpool_params(input_zero_point: Int32(inputZeroPoint),
                                            multiplier: multiplier.multiplier, shift: multiplier.shift)
        var out = output.cParameters
        let x = input.baseAddress!, y = destination.baseAddress!
        switch isa {
        case .portable: qf_gavgpool_u8_scalar(batch, pixels, channels, x, y, &parameters, &out)
        case .avx2: qf_gavgpool_u8_avx2(batch, pixels, channels, x, y, &parameters, &out)
        case .avx512vnni: qf_gavgpool_u8_avx512vnni(batch, pixels, channels, x, y, &parameters, &out)
        }
    }
}
