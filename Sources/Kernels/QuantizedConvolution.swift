import CKernels
import Tensor

/// A general (group = 1) convolution on u8 NHWC data, as im2col + `QuantizedGEMM`: every output pixel's
/// `kernelH × kernelW × C_in` patch becomes one GEMM row (out-of-image taps read the input zero point, i.e. real
/// 0). Meant for the stem (3×3, 1 or 3 input channels, any stride); 1×1 convolutions should use `QuantizedGEMM`
/// directly, which needs no copy.
///
/// Patches are built and multiplied in tiles of `tileRows` rows per thread, so the scratch stays cache-sized
/// whatever the image size. `run` allocates nothing: the caller passes `scratchByteCount(threads:)` bytes.
public struct QuantizedConvolution: Sendable {
    public struct Geometry: Sendable, Equatable {
        public var kernelHeight: Int, kernelWidth: Int
        public var strideHeight: Int, strideWidth: Int
        /// ONNX order: top, left, bottom, right.
        public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int

        public init(kernelHeight: Int, kernelWidth: Int, strideHeight: Int = 1, strideWidth: Int = 1,
                    padTop: Int = 0, padLeft: Int = 0, padBottom: Int = 0, padRight: Int = 0) {
            self.kernelHeight = kernelHeight
            self.kernelWidth = kernelWidth
            self.strideHeight = strideHeight
            self.strideWidth = strideWidth
            self.padTop = padTop
            self.padLeft = padLeft
            self.padBottom = padBottom
            self.padRight = padRight
        }
    }

    /// Rows of the patch matrix per tile.
    static let tileRows = 128

    public let inputChannels: Int
    public let outputChannels: Int
    public let geometry: Geometry
    public let gemm: QuantizedGEMM

    /// - Parameters:
    ///   - weights: ONNX order `[O, I, kH, kW]` int8 (reordered here to the patch order `[O, kH, kW, I]`).
    ///   - bias, multipliers, inputZeroPoint, output: as for `QuantizedGEMM`.
    public init(inputChannels: Int, outputChannels: Int, geometry: Geometry, weights: [Int8], bias: [Int32]?,
                multipliers: [QuantizedMultiplier], inputZeroPoint: UInt8, output: OutputQuantization) {
        let g = geometry
        precondition(inputChannels > 0 && g.kernelHeight > 0 && g.kernelWidth > 0 && g.strideHeight > 0 &&
                     g.strideWidth > 0 && min(g.padTop, g.padLeft, g.padBottom, g.padRight) >= 0,
                     "invalid convolution geometry \(g)")
        let taps = g.kernelHeight * g.kernelWidth
        precondition(weights.count == outputChannels * inputChannels * taps, "convolution weights: wrong count")
        var reordered = [Int8](repeating: 0, count: weights.count)
        for o in 0..<outputChannels {
            for i in 0..<inputChannels {
                for t in 0..<taps {
                    reordered[(o * taps + t) * inputChannels + i] = weights[(o * inputChannels + i) * taps + t]
                }
            }
        }
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.geometry = geometry
        gemm = QuantizedGEMM(outputChannels: outputChannels, depth: taps * inputChannels, weights: reordered,
                             bias: bias, multipliers: multipliers, inputZeroPoint: inputZeroPoint, output: output)
    }

    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let g = geometry
        return ((height + g.padTop + g.padBottom - g.kernelHeight) / g.strideHeight + 1,
                (width + g.padLeft + g.padRight - g.kernelWidth) / g.strideWidth + 1)
    }

    /// Scratch bytes `run` needs with this many threads.
    public func scratchByteCount(threads: Int) -> Int { max(1, threads) * Self.tileRows * gemm.depth }

    /// `input` is `batch × height × width × inputChannels`, `output` `batch × outH × outW × outputChannels`.
    public func run(input: UnsafeBufferPointer<UInt8>, batch: Int, height: Int, width: Int,
                    output destination: UnsafeMutableBufferPointer<UInt8>,
                    scratch: UnsafeMutableBufferPointer<UInt8>, isa: KernelISA = .best, threads: Int = 1) {
        let (outHeight, outWidth) = outputSize(height: height, width: width)
        precondition(batch >= 0 && outHeight > 0 && outWidth > 0, "convolution output would be empty")
        precondition(input.count >= batch * height * width * inputChannels, "convolution input too small")
        precondition(destination.count >= batch * outHeight * outWidth * outputChannels, "convolution output too small")
        let rows = batch * outHeight * outWidth
        let tiles = (rows + Self.tileRows - 1) / Self.tileRows
        let workers = Threading.workers(threads: threads, work: rows * outputChannels * gemm.depth, kind: .gemm,
                                        isa: isa, parallelism: tiles)
        precondition(scratch.count >= scratchByteCount(threads: workers), "convolution scratch too small")
        guard rows > 0 else { return }
        isa.requireSupported()
        let g = geometry
        let shape = qf_conv_shape(batch: batch, height: height, width: width, channels: inputChannels,
                                  kernel_h: g.kernelHeight, kernel_w: g.kernelWidth, stride_h: g.strideHeight,
                                  stride_w: g.strideWidth, pad_top: g.padTop, pad_left: g.padLeft,
                                  out_height: outHeight, out_width: outWidth)
        let sharedInput = Parallel.SharedPointer(input.baseAddress!)
        let sharedOutput = Parallel.SharedMutablePointer(destination.baseAddress!)
        let sharedScratch = Parallel.SharedMutablePointer(scratch.baseAddress!)
        let depth = gemm.depth
        Parallel.forEach(count: workers, threads: workers) { worker in
            var shape = shape
            let patches = sharedScratch.base + worker * Self.tileRows * depth
            for tile in Parallel.chunk(worker, of: workers, count: tiles) {
                let first = tile * Self.tileRows, last = min(rows, first + Self.tileRows)
                qf_im2col_u8_scalar(&shape, sharedInput.base, self.gemm.inputZeroPoint, first, last, patches)
                self.gemm.runUnchecked(input: patches, rows: last - first, lda: depth,
                                       output: sharedOutput.base + first * self.outputChannels,
                                       ldc: self.outputChannels, isa: isa, threads: 1)
            }
        }
    }
}
