import CKernels
import Tensor

/// A general (group = 1) convolution on u8 NHWC data, as im2col + `QuantizedGEMM`: every output pixel's
/// `kernelH × kernelW × C_in` patch becomes one GEMM row (out-of-image taps read the input zero point, i.e. real
/// 0). Meant for the stem (3×3, 1 or 3 input channels, any stride); 1×1 convolutions should use `QuantizedGEMM`
/// directly, which needs no copy.
///
/// Patches are built and multiplied in tiles of `tileRows` rows per thread, so the scratch stays cache-sized
/// whatever the image size. `run` allocates nothing: the caller passes `scratchByteCount(threads:height:width:)`
/// bytes.
///
/// A stem with one input channel and a kernel at most 4 wide has its kernel rows padded to 4 taps (zero weights),
/// so every kernel row of a patch is one 4-byte group of the GEMM. On AVX-512 VNNI such a convolution builds no
/// patches: it borders each image with the zero point once and lets the GEMM read the groups straight from it
/// (`qf_gemm_u8s8s32_grouped_avx512vnni`); im2col was 3/4 of the stem's time.
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
    /// Bytes of one kernel row in a patch (4 for a one-channel stem, else kernelWidth · inputChannels).
    let kernelRowBytes: Int

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
        // Patch rows are padded with zero weights: a stem's kernel rows to 4 taps, the depth to a multiple of 4
        // (the GEMM then reads whole 4-byte groups, without a partial last group per row).
        let kernelRowBytes = inputChannels == 1 && g.kernelWidth <= 4 ? 4 : g.kernelWidth * inputChannels
        let depth = (g.kernelHeight * kernelRowBytes + 3) / 4 * 4
        var reordered = [Int8](repeating: 0, count: outputChannels * depth)
        for o in 0..<outputChannels {
            for i in 0..<inputChannels {
                for ky in 0..<g.kernelHeight {
                    for kx in 0..<g.kernelWidth {
                        reordered[o * depth + ky * kernelRowBytes + kx * inputChannels + i] =
                            weights[((o * inputChannels + i) * g.kernelHeight + ky) * g.kernelWidth + kx]
                    }
                }
            }
        }
        self.kernelRowBytes = kernelRowBytes
        self.inputChannels = inputChannels
        self.outputChannels = outputChannels
        self.geometry = geometry
        gemm = QuantizedGEMM(outputChannels: outputChannels, depth: depth, weights: reordered,
                             bias: bias, multipliers: multipliers, inputZeroPoint: inputZeroPoint, output: output)
    }

    public func outputSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let g = geometry
        return ((height + g.padTop + g.padBottom - g.kernelHeight) / g.strideHeight + 1,
                (width + g.padLeft + g.padRight - g.kernelWidth) / g.strideWidth + 1)
    }

    /// Whether this convolution reads patches straight from a bordered image (see the type's comment).
    private var readsBorderedImage: Bool { inputChannels == 1 && kernelRowBytes == 4 }

    /// The bordered image: input pixel (y, x) at (y + padTop, x + padLeft); tall and wide enough for every 4-byte
    /// group any output pixel reads.
    private func borderedSize(height: Int, width: Int) -> (height: Int, width: Int) {
        let g = geometry, (outHeight, outWidth) = outputSize(height: height, width: width)
        return (max(height + g.padTop + g.padBottom, (outHeight - 1) * g.strideHeight + g.kernelHeight),
                max(width + g.padLeft + g.padRight, (outWidth - 1) * g.strideWidth + 4))
    }

    /// Scratch bytes `run` needs with this many threads for an input of `height × width`.
    public func scratchByteCount(threads: Int, height: Int, width: Int) -> Int {
        var perThread = Self.tileRows * gemm.depth
        if readsBorderedImage {
            let bordered = borderedSize(height: height, width: width)
            perThread = max(perThread, bordered.height * bordered.width)
        }
        return max(1, threads) * perThread
    }

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
        precondition(scratch.count >= scratchByteCount(threads: workers, height: height, width: width),
                     "convolution scratch too small")
        guard rows > 0 else { return }
        isa.requireSupported()
        let g = geometry
        if isa == .avx512vnni && readsBorderedImage {
            runBordered(input: input.baseAddress!, batch: batch, height: height, width: width,
                        output: destination.baseAddress!, scratch: scratch.baseAddress!, threads: workers)
            return
        }
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
                qf_im2col_u8_scalar(&shape, sharedInput.base, self.gemm.inputZeroPoint, first, last,
                                    self.kernelRowBytes, depth, patches)
                self.gemm.runUnchecked(input: patches, rows: last - first, lda: depth,
                                       output: sharedOutput.base + first * self.outputChannels,
                                       ldc: self.outputChannels, isa: isa, threads: 1)
            }
        }
    }

    /// The one-channel stem on AVX-512 VNNI: per image, a zero-point bordered copy in the worker's scratch, then
    /// one grouped GEMM per output row (row ox's group ky starts at bordered row oy·strideH + ky, column
    /// ox·strideW). Threads take whole images; `threads` is at most what the scratch was checked for.
    private func runBordered(input: UnsafePointer<UInt8>, batch: Int, height: Int, width: Int,
                             output destination: UnsafeMutablePointer<UInt8>, scratch: UnsafeMutablePointer<UInt8>,
                             threads: Int) {
        let g = geometry, (outHeight, outWidth) = outputSize(height: height, width: width)
        let bordered = borderedSize(height: height, width: width)
        let workers = Threading.workers(threads: threads, work: batch * outHeight * outWidth * outputChannels * gemm.depth,
                                        kind: .gemm, isa: .avx512vnni, parallelism: batch)
        let perThread = scratchByteCount(threads: 1, height: height, width: width)
        let sharedInput = Parallel.SharedPointer(input), sharedOutput = Parallel.SharedMutablePointer(destination)
        let sharedScratch = Parallel.SharedMutablePointer(scratch)
        let outputRowBytes = outWidth * outputChannels
        Parallel.forEach(count: workers, threads: workers) { worker in
            let image = sharedScratch.base + worker * perThread
            var parameters = self.gemm.output.cParameters
            for n in Parallel.chunk(worker, of: workers, count: batch) {
                qf_border_u8(sharedInput.base + n * height * width, height, width, g.padTop, g.padLeft,
                             bordered.height, bordered.width, self.gemm.inputZeroPoint, image)
                self.gemm.withPackedBytes { packed in
                    for oy in 0..<outHeight {
                        qf_gemm_u8s8s32_grouped_avx512vnni(outWidth, self.outputChannels, self.gemm.depth,
                                                           image + oy * g.strideHeight * bordered.width, g.strideWidth,
                                                           bordered.width, packed,
                                                           sharedOutput.base + (n * outHeight + oy) * outputRowBytes,
                                                           self.outputChannels, &parameters)
                    }
                }
            }
        }
    }
}
