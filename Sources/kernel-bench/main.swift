// Micro-benchmark of the int8 kernels (not a test): GOPS of the u8×s8 GEMM per ISA path for 512³ and for the
// MobileNetV2-FMNIST 1×1-convolution shapes, against the vpdpbusd ceiling measured in the same run, and
// milliseconds of the depthwise 3×3 layers. Run: swift run -c release kernel-bench [--quick]
import Foundation
import Kernels

let quick = CommandLine.arguments.contains("--quick")

/// Seconds per call over repeated calls (after one warm-up), spending about `budget` seconds: the fastest call.
/// Other engineers share these 2 cores, so single-threaded calls are timed in this thread's CPU time (time spent
/// waiting for a core does not count) and multi-threaded ones on the wall clock, which keeps the waiting: read
/// the 2-thread lines as "what the machine gave us now", not as the kernels' scaling.
func secondsPerCall(threads: Int = 1, budget: Double = quick ? 0.05 : 0.3, _ body: () -> Void) -> Double {
    let clock = threads == 1 ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC
    func seconds() -> Double {
        var now = timespec()
        clock_gettime(clock, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) * 1e-9
    }
    body()
    var best = Double.infinity
    let start = seconds()
    var calls = 0
    repeat {
        let t0 = seconds()
        body()
        best = min(best, seconds() - t0)
        calls += 1
    } while seconds() - start < budget && calls < 10_000
    return best
}

func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
}

func format(_ value: Double, _ decimals: Int = 1) -> String { String(format: "%.\(decimals)f", value) }

// MARK: - ceiling

let quietPeak = 1_046.0
/// GOPS of back-to-back vpdpbusd on this core now, or nil without AVX-512 VNNI.
func measureCeiling() -> Double? {
    guard ThroughputProbe.runVNNI(iterations: 1_000) != nil else { return nil }
    let iterations = 2_000_000
    let seconds = secondsPerCall(budget: 0.2) { _ = ThroughputProbe.runVNNI(iterations: iterations) }
    return Double(iterations) * 16 * 128 / seconds / 1e9
}
let measuredPeak = measureCeiling()
print("kernel-bench  CPU: \(MachineDescription.cpuModel)")
print("kernel-bench  best ISA: \(KernelISA.best)  supported: \(KernelISA.supported.map(\.rawValue).joined(separator: ", "))  (per-shape and per-layer lines below run the best ISA)")
if let peak = measuredPeak {
    print("vpdpbusd ceiling this run: \(format(peak, 0)) GOPS/core (quiet machine: ≈ \(format(quietPeak, 0)));"
          + " GEMM % below are of this run's ceiling")
} else {
    print("no AVX-512 VNNI on this CPU: no ceiling probe")
}
func percentOfPeak(_ gops: Double, ceiling: Double? = measuredPeak) -> String {
    guard let peak = ceiling else { return "" }
    return "  (\(format(100 * gops / peak, 0)) % of ceiling, \(format(100 * gops / quietPeak, 0)) % of 1,046)"
}

// MARK: - GEMM

struct GEMMShape {
    let rows: Int, depth: Int, columns: Int, count: Int
    var operations: Double { 2 * Double(rows * depth * columns * count) }
}

func makeGEMM(depth: Int, columns: Int) -> QuantizedGEMM {
    var generator = SystemRandomNumberGenerator()
    let weights = (0..<(depth * columns)).map { _ in Int8.random(in: -127...127, using: &generator) }
    return QuantizedGEMM(outputChannels: columns, depth: depth, weights: weights,
                         bias: [Int32](repeating: 100, count: columns),
                         multipliers: [QuantizedMultiplier(1.0 / Double(depth * 64))], inputZeroPoint: 128,
                         output: OutputQuantization(zeroPoint: 0).relu())
}

/// Seconds for one pass over all `shapes` (each run `count` times), with buffers allocated once.
func gemmSeconds(_ shapes: [GEMMShape], isa: KernelISA, threads: Int) -> Double {
    let gemms = shapes.map { makeGEMM(depth: $0.depth, columns: $0.columns) }
    let largestInput = shapes.map { $0.rows * $0.depth }.max()!, largestOutput = shapes.map { $0.rows * $0.columns }.max()!
    let input = (0..<largestInput).map { UInt8(truncatingIfNeeded: $0 &* 37) }
    var output = [UInt8](repeating: 0, count: largestOutput)
    return input.withUnsafeBufferPointer { a in
        output.withUnsafeMutableBufferPointer { c in
            secondsPerCall(threads: threads) {
                for (shape, gemm) in zip(shapes, gemms) {
                    for _ in 0..<shape.count { gemm.run(input: a, rows: shape.rows, output: c, isa: isa, threads: threads) }
                }
            }
        }
    }
}

print("\nu8s8 GEMM 512×512×512 (M×K×N), requantized to u8")
let cube = [GEMMShape(rows: 512, depth: 512, columns: 512, count: 1)]
for isa in KernelISA.supported {
    for threads in [1, 2] {
        let seconds = gemmSeconds(cube, isa: isa, threads: threads)
        let gops = cube[0].operations / seconds / 1e9
        print("  \(pad(isa.rawValue, 10))  \(threads) thread\(threads > 1 ? "s" : " ")  \(pad(format(seconds * 1e3, 3), 8)) ms"
              + "  \(pad(format(gops), 7)) GOPS" + (threads == 1 && isa == .avx512vnni ? percentOfPeak(gops) : ""))
    }
}

// MobileNetV2-FMNIST (width 0.5, 32×32, stride-8 variant): every 1×1 convolution, as (pixels per image, K, N, count),
// plus the final fully-connected layer.
let mobilenetPointwise: [(pixels: Int, depth: Int, columns: Int, count: Int)] = [
    (1024, 16, 8, 1), (1024, 8, 48, 1), (1024, 48, 16, 1), (1024, 16, 96, 2), (1024, 96, 16, 1),
    (256, 96, 16, 3), (256, 16, 96, 3), (64, 96, 32, 1), (64, 32, 192, 4), (64, 192, 32, 3), (64, 192, 48, 1),
    (64, 48, 288, 3), (64, 288, 48, 2), (16, 288, 80, 1), (16, 80, 480, 3), (16, 480, 80, 2), (16, 480, 160, 1),
    (16, 160, 1280, 1), (1, 1280, 10, 1),
]
for batch in [1, 32] {
    let shapes = mobilenetPointwise.map { GEMMShape(rows: $0.pixels * batch, depth: $0.depth, columns: $0.columns, count: $0.count) }
    let operations = shapes.reduce(0) { $0 + $1.operations }
    print("\nMobileNetV2-FMNIST, all 34 1×1 convs + FC, batch \(batch) (\(format(operations / 2e6)) M MACs)")
    for isa in KernelISA.supported {
        for threads in [1, 2] {
            let seconds = gemmSeconds(shapes, isa: isa, threads: threads)
            let gops = operations / seconds / 1e9
            print("  \(pad(isa.rawValue, 10))  \(threads) thread\(threads > 1 ? "s" : " ")  \(pad(format(seconds * 1e3, 3), 8)) ms"
                  + "  \(pad(format(gops), 7)) GOPS" + (threads == 1 && isa == .avx512vnni ? percentOfPeak(gops) : ""))
        }
    }
}

print("\nper shape, \(KernelISA.best), 1 thread, batch 32 (M = pixels·32)")
for shape in mobilenetPointwise {
    let one = [GEMMShape(rows: shape.pixels * 32, depth: shape.depth, columns: shape.columns, count: 1)]
    let seconds = gemmSeconds(one, isa: .best, threads: 1)
    print("  M \(pad(String(shape.pixels * 32), 5))  K \(pad(String(shape.depth), 4))  N \(pad(String(shape.columns), 4))"
          + "  ×\(shape.count)  \(pad(format(seconds * 1e6, 1), 8)) µs  \(pad(format(one[0].operations / seconds / 1e9), 7)) GOPS")
}

// MARK: - depthwise

// Every 3×3 depthwise layer of the model as (input height = width, channels, stride, count).
let mobilenetDepthwise: [(size: Int, channels: Int, stride: Int, count: Int)] = [
    (32, 16, 1, 1), (32, 48, 1, 1), (32, 96, 1, 1), (32, 96, 2, 1), (16, 96, 1, 2), (16, 96, 2, 1), (8, 192, 1, 4),
    (8, 288, 1, 2), (8, 288, 2, 1), (4, 480, 1, 3),
]
for batch in [1, 32] {
    let layers = mobilenetDepthwise.map { layer in
        QuantizedDepthwiseConvolution3x3(channels: layer.channels, stride: layer.stride,
                                         weights: (0..<(layer.channels * 9)).map { Int8(truncatingIfNeeded: $0 % 255 - 127) },
                                         bias: nil, multipliers: [QuantizedMultiplier(0.001)], inputZeroPoint: 7,
                                         output: OutputQuantization(zeroPoint: 0).relu())
    }
    let largest = mobilenetDepthwise.map { batch * $0.size * $0.size * $0.channels }.max()!
    let input = (0..<largest).map { UInt8(truncatingIfNeeded: $0 &* 13) }
    var output = [UInt8](repeating: 0, count: largest)
    let macs = mobilenetDepthwise.reduce(0) { total, layer in
        let out = (layer.size - 1) / layer.stride + 1
        return total + batch * out * out * layer.channels * 9 * layer.count
    }
    print("\nMobileNetV2-FMNIST, all 17 depthwise 3×3 layers, batch \(batch) (\(format(Double(macs) / 1e6, 2)) M MACs)")
    for isa in KernelISA.supported {
        for threads in [1, 2] {
            let seconds = input.withUnsafeBufferPointer { x in
                output.withUnsafeMutableBufferPointer { y in
                    secondsPerCall(threads: threads) {
                        for (layer, op) in zip(mobilenetDepthwise, layers) {
                            for _ in 0..<layer.count {
                                op.run(input: x, batch: batch, height: layer.size, width: layer.size, output: y,
                                       isa: isa, threads: threads)
                            }
                        }
                    }
                }
            }
            print("  \(pad(isa.rawValue, 10))  \(threads) thread\(threads > 1 ? "s" : " ")  \(pad(format(seconds * 1e3, 3), 8)) ms"
                  + "  \(pad(format(2 * Double(macs) / seconds / 1e9), 6)) GOPS")
        }
    }
}
