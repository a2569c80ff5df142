import Graph

/// Where a quantized model is meant to run, as far as that constrains its weights.
///
/// ONNX Runtime's u8×s8 kernels on x86 CPUs without VNNI (AVX2: AMD Zen 2/3/4, most Intel CPUs before Ice Lake,
/// and client CPUs whose AVX-VNNI ONNX Runtime does not use) multiply with `vpmaddubsw`, which adds two adjacent
/// u8·s8 products into a *saturating* int16. With 8-bit activations (up to 255) and 8-bit weights (up to 127) a pair
/// reaches 255·127·2 = 64,770 > 32,767, so such a file computes a different, worse function there than on a VNNI CPU
/// or in qatflow's engine (measured: 93.84 % against 94.46 % on the Fashion-MNIST MobileNetV2). Weights within
/// 7 bits (255·64·2 = 32,640) or activations within 7 bits (127·127·2 = 32,258) cannot saturate. ONNX Runtime's own
/// quantizer calls the 7-bit-weight fix `reduce_range`.
public enum DeploymentTarget: String, CaseIterable, Sendable {
    /// Weights use the bits asked for. qatflow's int8 engine computes such a model exactly on every CPU; its ONNX
    /// QDQ export is exact in ONNX Runtime on CPUs with VNNI and on ARM, and may saturate on other x86 CPUs
    /// (the export says so).
    case qatflow
    /// Weights of a layer whose input activations have 8 bits get at most 7 bits, so the ONNX QDQ export computes
    /// the same function in ONNX Runtime on every x86 CPU as in qatflow's engine.
    case onnxruntimeX86 = "onnxruntime-x86"

    /// The weight bits a layer gets when `requested` bits are asked for and its input activations have
    /// `inputActivationBits` bits.
    public func weightBits(requested: Int, inputActivationBits: Int) -> Int {
        switch self {
        case .qatflow: return requested
        case .onnxruntimeX86: return inputActivationBits >= 8 ? min(requested, 7) : requested
        }
    }

    /// A reason to refuse an explicit request that this target cannot honour, else nil.
    public func conflict(weightBits: Int, activationBits: Int) -> String? {
        guard self.weightBits(requested: weightBits, inputActivationBits: activationBits) != weightBits else { return nil }
        return "\(weightBits)-bit weights with \(activationBits)-bit activations can saturate ONNX Runtime's int8 kernels on x86 CPUs without VNNI (vpmaddubsw adds two u8·s8 products into a saturating int16); target \(rawValue) allows at most 7-bit weights there: drop weight_bits (bits: 8 then gives W7A8), or use target: qatflow"
    }
}
