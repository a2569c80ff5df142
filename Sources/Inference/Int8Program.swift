import Graph
import Kernels

/// The prepared int8 model: steps in execution order over numbered u8 storages and float slots.
/// Produced once by `Int8GraphCompiler`; every batch size gets its own `Int8Workspace` for it.
struct Int8Program: Sendable {
    var steps: [any Int8Step] = []
    /// Bytes of each u8 storage for one image (all activations scale with the batch).
    var storageBytesPerImage: [Int] = []
    var floatSlotCount = 0
    /// Graph inputs and outputs by float slot.
    var inputs: [(name: String, slot: Int)] = []
    var outputs: [(name: String, slot: Int)] = []
    /// The general convolutions with their input sizes: the scratch is sized for the largest.
    var convolutionScratch: [(kernel: QuantizedConvolution, height: Int, width: Int)] = []

    func scratchBytes(threads: Int) -> Int {
        convolutionScratch.map { $0.kernel.scratchByteCount(threads: threads, height: $0.height, width: $0.width) }.max() ?? 0
    }
}

/// One operation of the int8 program. `reads`/`writes` name u8 storages (for the memory plan); float slots are
/// owned by the workspace and need no plan.
protocol Int8Step: Sendable {
    /// The graph node(s) this step computes, for error messages and profiles.
    var label: String { get }
    var reads: [Int] { get }
    var writes: [Int] { get }
    func run(in workspace: Int8Workspace, threads: Int) throws
}

/// The (scale, zero point, bits) of a u8 activation: `real = (q − zeroPoint) · scale`, `q ∈ [0, 2^bits − 1]`.
struct ActivationGrid: Equatable, Sendable {
    var scale: Float
    var zeroPoint: UInt8
    var bits: Int

    var outputQuantization: OutputQuantization { OutputQuantization(zeroPoint: Int32(zeroPoint), bits: bits) }
}

/// How a u8 activation of logical (NCHW) per-image shape is laid out: rank-3 per-image shapes `[C, H, W]` are
/// stored channels last (`[H, W, C]`), every other rank in logical row-major order.
struct ActivationLayout: Equatable, Sendable {
    var perImageShape: [Int]

    var elementsPerImage: Int { perImageShape.reduce(1, *) }
    var isChannelsLast: Bool { perImageShape.count == 3 && perImageShape[1] * perImageShape[2] > 1 }
    var channels: Int { perImageShape.first ?? 1 }
    var pixels: Int { perImageShape.count == 3 ? perImageShape[1] * perImageShape[2] : 1 }

    /// Where the element at logical (row-major) index `index` of one image is stored.
    func storagePosition(ofLogical index: Int) -> Int {
        guard isChannelsLast else { return index }
        let pixels = self.pixels
        return (index % pixels) * channels + index / pixels
    }
}
