import CKernels
import Tensor

/// `Y = requantize(A · Wᵀ + bias)`: u8 activations (with a zero point) times s8 weights (per-output-channel
/// symmetric, zero point 0), int32 accumulation, fixed-point requantization to u8 per output channel.
///
/// This is the 1×1 convolution and the fully-connected layer. Activations are NHWC, so a 1×1 convolution over
/// `batch·H·W` pixels with `C_in` channels is this GEMM with `rows = batch·H·W`, `depth = C_in`,
/// `outputChannels = C_out`, and its output is NHWC again (row-major `rows × outputChannels`).
///
/// Prepare/run split (XNNPACK style): `init` packs the weights once into the kernels' layout (panels of 16
/// output channels, 4 consecutive depths per 32-bit lane) together with the bias, from which it already subtracts
/// `inputZeroPoint · Σ_k W[n][k]` (so the kernels multiply raw u8 activations), and the per-channel multipliers.
/// `run` allocates nothing.
public struct QuantizedGEMM: Sendable {
    /// Columns of the output (output channels, N).
    public let outputChannels: Int
    /// Inner dimension (input channels, K).
    public let depth: Int
    public let inputZeroPoint: UInt8
    public let output: OutputQuantization
    private let packed: PackedBuffer

    /// - Parameters:
    ///   - weights: `outputChannels × depth` int8 values, row-major (ONNX Conv `[O, I, 1, 1]`, Gemm `transB = 1`).
    ///   - bias: `outputChannels` int32 values with scale `s_in · s_w[n]`, or nil for none.
    ///   - multipliers: per output channel, `s_in · s_w[n] / s_out` (one value is broadcast to all channels).
    public init(outputChannels: Int, depth: Int, weights: [Int8], bias: [Int32]?,
                multipliers: [QuantizedMultiplier], inputZeroPoint: UInt8, output: OutputQuantization) {
        precondition(outputChannels > 0 && depth > 0, "GEMM needs at least one output channel and one depth")
        // Accumulators stay below 2^30 (32,768 · 255 · 127 ≈ 2^30), the bound under which every ISA path is
        // bit-exact (see qf_requant.h).
        precondition(depth <= 32_768, "GEMM depth \(depth) above 32,768")
        precondition(weights.count == outputChannels * depth, "GEMM weights: expected \(outputChannels * depth)")
        precondition(bias == nil || bias!.count == outputChannels, "GEMM bias: expected \(outputChannels) values")
        let perChannel = expandPerChannel(multipliers, count: outputChannels, what: "GEMM multipliers")
        self.outputChannels = outputChannels
        self.depth = depth
        self.inputZeroPoint = inputZeroPoint
        self.output = output
        let multiplierValues = perChannel.map(\.multiplier), shiftValues = perChannel.map(\.shift)
        packed = PackedBuffer(byteCount: qf_gemm_u8s8_packed_size(outputChannels, depth)) { destination in
            var stage = output.cParameters
            qf_gemm_u8s8_pack(outputChannels, depth, weights, bias, multiplierValues, shiftValues,
                              Int32(inputZeroPoint), &stage, destination)
        }
    }

    /// Bytes of packed weights (a multiple of 64).
    public var packedByteCount: Int { packed.byteCount }

    /// Computes `rows` output rows. `input` row `r` starts at `r · inputRowStride` (≥ `depth`), output row `r` at
    /// `r · outputRowStride` (≥ `outputChannels`); bytes between rows are neither read nor written.
    /// `threads > 1` splits rows (or, for few rows, output channels) when each thread gets enough work.
    public func run(input: UnsafeBufferPointer<UInt8>, rows: Int, inputRowStride: Int? = nil,
                    output destination: UnsafeMutableBufferPointer<UInt8>, outputRowStride: Int? = nil,
                    isa: KernelISA = .best, threads: Int = 1) {
        let lda = inputRowStride ?? depth, ldc = outputRowStride ?? outputChannels
        precondition(rows >= 0 && lda >= depth && ldc >= outputChannels, "GEMM strides smaller than the rows")
        guard rows > 0 else { return }
        precondition(input.count >= (rows - 1) * lda + depth, "GEMM input holds fewer than \(rows) rows")
        precondition(destination.count >= (rows - 1) * ldc + outputChannels, "GEMM output too small")
        isa.requireSupported()
        runUnchecked(input: input.baseAddress!, rows: rows, lda: lda, output: destination.baseAddress!, ldc: ldc,
                     isa: isa, threads: threads)
    }

    /// The same with sizes already validated by the caller (convolutions built on this GEMM).
    func runUnchecked(input: UnsafePointer<UInt8>, rows: Int, lda: Int, output destination: UnsafeMutablePointer<UInt8>,
                      ldc: Int, isa: KernelISA, threads: Int) {
        let panels = (outputChannels + 15) / 16
        let workers = Threading.workers(threads: threads, work: rows * outputChannels * depth, kind: .gemm, isa: isa)
        if workers == 1 {
            kernel(isa: isa, rows: rows, firstPanel: 0, columns: outputChannels, input: input, lda: lda,
                   output: destination, ldc: ldc)
            return
        }
        let sharedInput = Parallel.SharedPointer(input), sharedOutput = Parallel.SharedMutablePointer(destination)
        let rowTiles = (rows + 7) / 8
        if rowTiles >= 4 * workers || panels < 2 * workers {
            // Rows in whole 8-row tiles (the VNNI kernel's height), so no worker computes a partial tile it
            // does not need.
            Parallel.forEachChunk(count: rowTiles, threads: workers) { tiles in
                let first = tiles.lowerBound * 8, last = min(rows, tiles.upperBound * 8)
                self.kernel(isa: isa, rows: last - first, firstPanel: 0, columns: self.outputChannels,
                            input: sharedInput.base + first * lda, lda: lda,
                            output: sharedOutput.base + first * ldc, ldc: ldc)
            }
        } else {
            // Few rows, many channels (late layers at batch 1): split whole pairs of panels.
            let panelPairs = (panels + 1) / 2
            Parallel.forEachChunk(count: panelPairs, threads: workers) { pairs in
                let firstPanel = pairs.lowerBound * 2
                let columns = min(self.outputChannels, pairs.upperBound * 32) - firstPanel * 16
                self.kernel(isa: isa, rows: rows, firstPanel: firstPanel, columns: columns,
                            input: sharedInput.base, lda: lda, output: sharedOutput.base + firstPanel * 16, ldc: ldc)
            }
        }
    }

    /// `output[r][n] = Float(Σ_k (input[r][k] − inputZeroPoint)·W[n][k] + bias[n]) · scales[n]`, rows `depth` and
    /// `outputChannels` apart: the int32 sum exactly, rounded once to float (no requantization; `multipliers` and
    /// `output` of `init` are unused). For a classifier whose logits stay float. One thread.
    public func runFloatOutput(input: UnsafePointer<UInt8>, rows: Int, scales: UnsafePointer<Float>,
                               output destination: UnsafeMutablePointer<Float>, isa: KernelISA = .best) {
        guard rows > 0 else { return }
        isa.requireSupported()
        packed.withBytes { packed in
            switch isa {
            case .portable, .avx2:
                qf_gemm_u8s8f32_scalar(rows, outputChannels, depth, input, depth, packed, scales, destination,
                                       outputChannels)
            case .avx512vnni:
                qf_gemm_u8s8f32_avx512vnni(rows, outputChannels, depth, input, depth, packed, scales, destination,
                                           outputChannels)
            }
        }
    }

    /// The packed weights, for kernels built on this GEMM's layout.
    func withPackedBytes<R>(_ body: (UnsafeRawPointer) -> R) -> R { packed.withBytes(body) }

    private func kernel(isa: KernelISA, rows: Int, firstPanel: Int, columns: Int, input: UnsafePointer<UInt8>,
                        lda: Int, output destination: UnsafeMutablePointer<UInt8>, ldc: Int) {
        var parameters = output.cParameters
        let panelBytes = qf_gemm_u8s8_panel_size(depth)
        packed.withBytes { base in
            let panels = base + firstPanel * panelBytes
            switch isa {
            case .portable:
                qf_gemm_u8s8s32_scalar(rows, columns, depth, input, lda, panels, destination, ldc, &parameters)
            case .avx2:
                qf_gemm_u8s8s32_avx2(rows, columns, depth, input, lda, panels, destination, ldc, &parameters)
            case .avx512vnni:
                qf_gemm_u8s8s32_avx512vnni(rows, columns, depth, input, lda, panels, destination, ldc, &parameters)
            }
        }
    }
}

/// One multiplier per channel; a single value stands for all channels (per-tensor quantization).
func expandPerChannel(_ multipliers: [QuantizedMultiplier], count: Int, what: String) -> [QuantizedMultiplier] {
    if multipliers.count == 1 { return Array(repeating: multipliers[0], count: count) }
    precondition(multipliers.count == count, "\(what): expected 1 or \(count) values, got \(multipliers.count)")
    return multipliers
}
