import Tensor

/// The memory of one batch size: a single 64-byte aligned arena holding every u8 activation at an offset chosen
/// so that values alive at the same time never overlap, plus the im2col scratch and the float slots of the float
/// boundary (graph inputs and outputs, float fallback nodes).
///
/// Built once per batch size (and, for chunked runs, per thread) by the executor; `run` then only hands out
/// pointers into it. `@unchecked Sendable` is sound because the executor gives a workspace to one run on one
/// thread at a time (under its run lock; a chunked run gives each thread its own).
final class Int8Workspace: @unchecked Sendable {
    let batch: Int
    private let arena: UnsafeMutableRawPointer
    private let offsets: [Int]
    private let byteCounts: [Int]
    let scratch: UnsafeMutableBufferPointer<UInt8>
    /// Float values by slot (graph inputs, dequantized values for fallback nodes, graph outputs).
    var floats: [Tensor?]
    /// Total arena bytes (for tests and reports).
    let arenaByteCount: Int

    init(program: Int8Program, batch: Int, threads: Int) {
        self.batch = batch
        let sizes = program.storageBytesPerImage.map { Self.aligned($0 * batch) }
        let lifetimes = Self.lifetimes(of: program)
        var offsets = [Int](repeating: 0, count: sizes.count)
        var end = 0
        // Greedy first fit, largest first: a storage goes at the lowest offset that does not overlap any placed
        // storage whose lifetime (first to last step touching it) intersects its own.
        var placed: [Int] = []
        for storage in sizes.indices.sorted(by: { sizes[$0] > sizes[$1] }) {
            guard let life = lifetimes[storage], sizes[storage] > 0 else { continue }
            let conflicts = placed.filter { other in
                let span = lifetimes[other]!
                return span.lowerBound <= life.upperBound && life.lowerBound <= span.upperBound
            }.map { (offsets[$0], offsets[$0] + sizes[$0]) }.sorted { $0.0 < $1.0 }
            var candidate = 0
            for (start, stop) in conflicts {
                if candidate + sizes[storage] <= start { break }
                candidate = max(candidate, stop)
            }
            offsets[storage] = candidate
            end = max(end, candidate + sizes[storage])
            placed.append(storage)
        }
        arenaByteCount = max(end, 64)
        arena = UnsafeMutableRawPointer.allocate(byteCount: arenaByteCount, alignment: 64)
        self.offsets = offsets
        byteCounts = sizes
        let scratchBytes = max(1, program.scratchBytes(threads: threads))
        scratch = UnsafeMutableBufferPointer<UInt8>.allocate(capacity: scratchBytes)
        floats = Array(repeating: nil, count: program.floatSlotCount)
    }

    deinit {
        arena.deallocate()
        scratch.deallocate()
    }

    func input(_ storage: Int) -> UnsafeBufferPointer<UInt8> { UnsafeBufferPointer(output(storage)) }

    func output(_ storage: Int) -> UnsafeMutableBufferPointer<UInt8> {
        UnsafeMutableBufferPointer(start: (arena + offsets[storage]).assumingMemoryBound(to: UInt8.self),
                                   count: byteCounts[storage])
    }

    private static func aligned(_ bytes: Int) -> Int { (bytes + 63) / 64 * 64 }

    /// First and last step index touching each storage (nil: never touched).
    private static func lifetimes(of program: Int8Program) -> [ClosedRange<Int>?] {
        var result = [ClosedRange<Int>?](repeating: nil, count: program.storageBytesPerImage.count)
        for (index, step) in program.steps.enumerated() {
            for storage in step.reads + step.writes {
                result[storage] = result[storage].map { $0.lowerBound...index } ?? index...index
            }
        }
        return result
    }
}
