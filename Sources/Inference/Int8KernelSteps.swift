import Kernels
import Tensor

// The steps that run an int8 kernel from u8 storage to u8 storage. Sizes were checked by the compiler against
// shape inference, so each step only scales its per-image extents by the workspace's batch.

/// 1×1 convolution (rows = pixels) or fully-connected layer (one row per image) as one GEMM.
struct Int8GEMMStep: Int8Step {
    let label: String
    let kernel: QuantizedGEMM
    let input: Int, output: Int
    let rowsPerImage: Int
    var reads: [Int] { [input] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) {
        kernel.run(input: workspace.input(input), rows: rowsPerImage * workspace.batch,
                   output: workspace.output(output), threads: threads)
    }
}

struct Int8DepthwiseStep: Int8Step {
    let label: String
    let kernel: QuantizedDepthwiseConvolution3x3
    let input: Int, output: Int
    let height: Int, width: Int
    var reads: [Int] { [input] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) {
        kernel.run(input: workspace.input(input), batch: workspace.batch, height: height, width: width,
                   output: workspace.output(output), threads: threads)
    }
}

/// Any group-1 convolution (the stem) via im2col into the workspace scratch.
struct Int8ConvolutionStep: Int8Step {
    let label: String
    let kernel: QuantizedConvolution
    let input: Int, output: Int
    let height: Int, width: Int
    var reads: [Int] { [input] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) {
        kernel.run(input: workspace.input(input), batch: workspace.batch, height: height, width: width,
                   output: workspace.output(output), scratch: workspace.scratch, threads: threads)
    }
}

struct Int8AddStep: Int8Step {
    let label: String
    let kernel: QuantizedAdd
    let a: Int, b: Int, output: Int
    let elementsPerImage: Int
    var reads: [Int] { [a, b] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) {
        kernel.run(workspace.input(a), workspace.input(b), count: elementsPerImage * workspace.batch,
                   output: workspace.output(output), threads: threads)
    }
}

/// Global average pooling, u8 NHWC → u8 `[batch, channels]`: exact int32 sums per channel, then one rescale by
/// `s_in / (pixels · s_out)` rounded half to even.
///
/// Not `QuantizedGlobalAveragePool`: its fixed-point multiplier rounds twice (see `Int8Requantization`), which
/// on MobileNetV2-FMNIST moved 16 % of the pooled codes (mean +0.11 code) away from the QDQ simulation, right
/// before the classifier. This step touches `batch × channels` outputs only, so the Double rescale costs little.
struct Int8GlobalAveragePoolStep: Int8Step {
    let label: String
    let input: Int, output: Int
    let pixels: Int, channels: Int
    let inputZeroPoint: Int32
    /// `s_in / (pixels · s_out)`.
    let scale: Double
    let clamp: OutputQuantization
    var reads: [Int] { [input] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) {
        let source = workspace.input(input), destination = workspace.output(output)
        let channels = self.channels, pixels = self.pixels, offset = Int32(pixels) * inputZeroPoint
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: channels) { sums in
            for image in 0..<workspace.batch {
                // Sums and rescale in C (vectorised; as Swift loops the sums were 3× the float engine's whole pool,
                // and the rescale half of this step's time).
                QuantizedGlobalAveragePool.channelSums(source.baseAddress! + image * pixels * channels,
                                                       pixels: pixels, channels: channels, into: sums.baseAddress!)
                QuantizedGlobalAveragePool.rescale(sums.baseAddress!, count: channels, offset: offset, scale: scale,
                                                   output: clamp,
                                                   into: destination.baseAddress! + image * channels)
            }
        }
    }
}

/// A Flatten/Reshape between two equal grids whose storage orders differ (an NHWC image flattened to NCHW
/// order): a per-image gather through a table computed at prepare time.
struct Int8ReorderStep: Int8Step {
    let label: String
    let input: Int, output: Int
    /// `table[outputPosition] = inputPosition` within one image.
    let table: [Int32]
    var reads: [Int] { [input] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) {
        let source = workspace.input(input), destination = workspace.output(output)
        let perImage = table.count
        table.withUnsafeBufferPointer { table in
            for image in 0..<workspace.batch {
                let base = image * perImage
                for position in 0..<perImage { destination[base + position] = source[base + Int(table[position])] }
            }
        }
    }
}

/// A fully connected layer on u8 codes with a float output (a graph output such as logits, which stays float):
/// exact int32 accumulation, then one multiplication by `s_in · s_w[n]` (`QuantizedGEMM.runFloatOutput`; the
/// plain Swift loop was 0.4 ms of a 3.4 ms MobileNetV2-224 run, its 1280 × 1000 classifier).
struct Int8GEMMFloatOutputStep: Int8Step {
    let label: String
    let kernel: QuantizedGEMM
    let scales: [Float]
    let input: Int
    let destination: Int
    var reads: [Int] { [input] }
    var writes: [Int] { [] }

    func run(in workspace: Int8Workspace, threads: Int) {
        let source = workspace.input(input), batch = workspace.batch, outputChannels = kernel.outputChannels
        let values = [Float](unsafeUninitializedCapacity: batch * outputChannels) { y, initialized in
            scales.withUnsafeBufferPointer { scales in
                kernel.runFloatOutput(input: source.baseAddress!, rows: batch, scales: scales.baseAddress!,
                                      output: y.baseAddress!)
            }
            initialized = batch * outputChannels
        }
        workspace.floats[destination] = Tensor(shape: [batch, outputChannels], data: values)
    }
}
