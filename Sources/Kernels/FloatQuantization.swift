import CKernels

/// QuantizeLinear of float values into u8 storage, for the int8 engine's graph inputs.
public enum FloatQuantization {
    /// `output[i · stride] = clamp(round_half_to_even(input[i] / scale) + zeroPoint, 0, high)`, NaN → zeroPoint:
    /// the float executor's QuantizeLinear, bit for bit (C, without a rintf call per element).
    public static func quantize(_ input: UnsafePointer<Float>, count: Int, scale: Float, zeroPoint: Float, high: Float,
                                into output: UnsafeMutablePointer<UInt8>, stride: Int) {
        precondition(count >= 0 && stride >= 1 && high <= 255 && zeroPoint >= 0 && zeroPoint <= high,
                     "quantize: invalid arguments")
        qf_quantize_f32_u8(count, input, scale, zeroPoint, high, output, stride)
    }
}
