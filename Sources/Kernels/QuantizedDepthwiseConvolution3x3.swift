import CKernels
import Tensor

/// 3×3 depthwise convolution (group = channels), padding 1 on every side, stride 1 or 2, u8 NHWC in and out,
/// s8 per-channel symmetric weights, the same fused requantization and clamp as `QuantizedGEMM`.
///
/// Padding reads the input zero point (real 0). `init` packs weights per group of 16 channels, tap-major, and
/// folds `inputZeroPoint · Σ(9 weights)` into the bias.
public struct QuantizedDepthwiseConvolution3x3: Sendable {
    public let channels: Int
    public let stride: Int
    public let inputZeroPoint: UInt8
    public let output: OutputQuantization
    private let packed: PackedBuffer

    /// - Parameters:
    ///   - weights: `channels × 9` int8 values (ONNX `[C, 1, 3, 3]`).
    ///   - bias: `channels` int32 values with scale `s_in · s_w[c]`, or nil.
    ///   - multipliers: `s_in · s_w[c] / s_out` per channel (or one for all).
    public init(channels: Int, stride: Int, weights: [Int8], bias: [Int32]?, multipliers: [QuantizedMultiplier],
                inputZeroPoint: UInt8, output: OutputQuantization) {
        precondition(channels > 0, "depthwise convolution needs channels")
        precondition(stride == 1 || stride == 2, "depthwise 3×3 supports stride 1 and 2, not \(stride)")
        precondition(weights.count == channels * 9, "depthwise weights: expected \(channels * 9) values")
        precondition(bias == nil || bias!.count == channels, "depthwise bias: expected \(channels) values")
        let perChannel = expandPerChannel(multipliers, count: channels, what: "depthwise multipliers")
        self.channels = channels
        self.stride = stride
        self.inputZeroPoint = inputZeroPoint
        self.output = output
        let multiplierValues = perChannel.map(\.multiplier), shiftValues = perChannel.map(\.shift)
        packed = PackedBuffer(byteCount: qf_dwconv3x3_u8s8_packed_size(channels)) { destination in
            qf_dwconv3x3_u8s8_pack(channels, weights, bias, multiplierValues, shiftValues, Int32(inputZeroPoint),
                                   destination)
        }
    }

    /// Output height and width for an input of `height × width` (padding 1, kernel 3).
    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        ((height - 1) / stride + 1, (width - 1) / stride + 1)
    }

    /// `input` is `batch × height × width × channels`, `output` `batch × outH × outW × channels` (NHWC).
    public func run(input: UnsafeBufferPointer<UInt8>, batch: Int, height: Int, width: Int,
                    output destination: UnsafeMutableBufferPointer<UInt8>, isa: KernelISA = .best,
                    threads: Int = 1) {
        precondition(batch >= 0 && height > 0 && width > 0, "depthwise input must not be empty")
        let (outHeight, outWidth) = outputSize(height: height, width: width)
        precondition(input.count >= batch * height * width * channels, "depthwise input too small")
        precondition(destination.count >= batch * outHeight * outWidth * channels, "depthwise output too small")
        guard batch > 0 else { return }
        isa.requireSupported()
        let frozenShape = qf_dwconv_shape(batch: batch, height: height, width: width, channels: channels, stride: stride,
                                    out_height: outHeight, out_width: outWidth,
                                    input_zero_point: Int32(inputZeroPoint))
        let rows = batch * outHeight
        let workers = Threading.workers(threads: threads, work: rows * outWidth * channels * 9, kind: .depthwise,
                                        isa: isa, parallelism: rows)
        let sharedInput = Parallel.SharedPointer(input.baseAddress!)
        let sharedOutput = Parallel.SharedMutablePointer(destination.baseAddress!)
        Parallel.forEachChunk(count: rows, threads: workers) { rowRange in
            var shape = frozenShape
            var parameters = self.output.cParameters
            self.packed.withBytes { weights in
                let begin = rowRange.lowerBound, end = rowRange.upperBound
                switch isa {
                case .portable:
                    qf_dwconv3x3_u8s8_scalar(&shape, sharedInput.base, weights, begin, end, sharedOutput.base,
                                             &parameters)
                case .avx2:
                    qf_dwconv3x3_u8s8_avx2(&shape, sharedInput.base, weights, begin, end, sharedOutput.base,
                                           &parameters)
                case .avx512vnni:
                    qf_dwconv3x3_u8s8_avx512vnni(&shape, sharedInput.base, weights, begin, end, sharedOutput.base,
                                                 &parameters)
                }
            }
        }
    }
}
