import CKernels

/// Single-precision matrix multiply `C = A·B` or `C += A·B` (row-major, leading dimensions), blocked and packed
/// in the GotoBLAS way. The loop nest and the micro-kernels live in the C target `CKernels` (`qf_fp32.h`,
/// `fp32_gemm*.c`): one register-blocked micro-kernel per instruction set (AVX-512: 8×32, AVX2: 6×16,
/// portable: 6×8), picked at run time (`FP32InstructionSet`). A is packed into row panels of the micro-kernel's
/// height (`PackedMatrixA`, once per weight matrix for convolutions), B one column panel at a time inside the C
/// driver. This type adds the thread split.
public enum GEMM {
    /// `C[m×n] (+)= A[m×k] · B[k×n]`. `transposeA` means `a` holds Aᵀ (k×m, leading dimension `lda`), likewise `b`.
    /// With `accumulate == false` C is overwritten (its previous contents are ignored, even NaN).
    public static func multiply(m: Int, n: Int, k: Int,
                                a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                                b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool = false, threads: Int = 1, streamB: Bool = false,
                                instructionSet: FP32InstructionSet = .preferred) {
        guard m > 0, n > 0 else { return }
        let packed = PackedMatrixA(rows: m, depth: k, a: a, lda: lda, transposed: transposeA, instructionSet: instructionSet)
        multiply(packedA: packed, n: n, b: b, ldb: ldb, transposeB: transposeB, c: c, ldc: ldc,
                 accumulate: accumulate, threads: threads, streamB: streamB)
    }

    /// `C[m×n] = epilogue((accumulate ? C : 0) + A · B)` with A packed beforehand (convolution and fully-connected
    /// weights are packed once at prepare time), on the instruction set A was packed for. Threads split the
    /// columns of C in whole micro-kernel panels, or its rows when there are too few column panels (narrow planes).
    ///
    /// `streamB`: B is read from memory rather than from cache (training's activations, tens of MB per batch): the
    /// driver then prefetches B's rows ahead and packs B for more of the shapes (see `fp32_gemm.c`); same result.
    public static func multiply(packedA: PackedMatrixA, n: Int,
                                b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool = false, threads: Int = 1, epilogue: GEMMEpilogue = .none,
                                streamB: Bool = false) {
        let m = packedA.rows, k = packedA.depth
        guard m > 0, n > 0 else { return }
        let isa = packedA.instructionSet
        let rowTile = isa.gemmRowTile, columnTile = isa.gemmColumnTile
        let columnPanels = (n + columnTile - 1) / columnTile, rowPanels = (m + rowTile - 1) / rowTile
        // A thread hand-off costs tens of microseconds: split only when each worker gets ≥ ~256K multiply-adds.
        let workers = max(1, min(threads, max(columnPanels, rowPanels), (m * n * k) / 262_144 + 1))
        packedA.storage.withUnsafeBufferPointer { packed in
            if workers == 1 {
                run(isa, m: m, n: n, k: k, packedA: packed.baseAddress!, b: b, ldb: ldb, transposeB: transposeB,
                    c: c, ldc: ldc, accumulate: accumulate, epilogue: epilogue, streamB: streamB)
                return
            }
            let sharedA = Parallel.SharedPointer(packed.baseAddress!), sharedB = Parallel.SharedPointer(b)
            let sharedC = Parallel.SharedMutablePointer(c)
            let bias = epilogue.bias.map { Parallel.SharedPointer($0) }
            let (minimum, maximum) = (epilogue.minimum, epilogue.maximum)
            let splitColumns = columnPanels >= workers
            Parallel.forEach(count: workers, threads: workers) { worker in
                var part = GEMMEpilogue(bias: bias?.base, minimum: minimum, maximum: maximum)
                if splitColumns {
                    let panels = Parallel.chunk(worker, of: workers, count: columnPanels)
                    let first = panels.lowerBound * columnTile, end = min(n, panels.upperBound * columnTile)
                    guard end > first else { return }
                    run(isa, m: m, n: end - first, k: k, packedA: sharedA.base,
                        b: sharedB.base + (transposeB ? first * ldb : first), ldb: ldb, transposeB: transposeB,
                        c: sharedC.base + first, ldc: ldc, accumulate: accumulate, epilogue: part, streamB: streamB)
                } else {
                    let panels = Parallel.chunk(worker, of: workers, count: rowPanels)
                    let first = panels.lowerBound * rowTile, end = min(m, panels.upperBound * rowTile)
                    guard end > first else { return }
                    part.bias = part.bias.map { $0 + first }
                    run(isa, m: end - first, n: n, k: k, packedA: sharedA.base + first * k,
                        b: sharedB.base, ldb: ldb, transposeB: transposeB,
                        c: sharedC.base + first * ldc, ldc: ldc, accumulate: accumulate, epilogue: part, streamB: streamB)
                }
            }
        }
    }

    /// `C[m×n] += Σ_{s<segments} A_s · B_sᵀ` with `A_s = a + s·aStride` (m×k, row stride `lda`) and
    /// `B_s = b + s·bStride` (n×k, row stride `ldb`): both operands contiguous along k, as in a 1×1 convolution's
    /// weight gradient over NCHW images (`dW += Σ_n dY_n · X_nᵀ`). Needs no packing or transposing; single thread.
    /// Only the AVX-512 path is fast (`hasFastTransposedProducts`); the others are plain dot products.
    public static func accumulateTransposedProducts(m: Int, n: Int, k: Int, segments: Int,
                                                    a: UnsafePointer<Float>, lda: Int, aStride: Int,
                                                    b: UnsafePointer<Float>, ldb: Int, bStride: Int,
                                                    c: UnsafeMutablePointer<Float>, ldc: Int,
                                                    instructionSet: FP32InstructionSet = .preferred) {
        precondition(instructionSet.isSupported, "GEMM: this CPU cannot run the \(instructionSet) path")
        qf_fp32_gemm_nt(instructionSet.rawValue, m, n, k, segments, a, lda, aStride, b, ldb, bStride, c, ldc)
    }

    /// True when `accumulateTransposedProducts` has a vector kernel on the preferred path.
    public static var hasFastTransposedProducts: Bool { FP32InstructionSet.preferred == .avx512 }

    /// One thread's share through the C driver.
    private static func run(_ isa: FP32InstructionSet, m: Int, n: Int, k: Int, packedA: UnsafePointer<Float>,
                            b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
                            c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool, epilogue: GEMMEpilogue,
                            streamB: Bool) {
        var parameters = qf_fp32_epilogue(bias: epilogue.bias, minimum: epilogue.minimum, maximum: epilogue.maximum,
                                          clamp: epilogue.clamps ? 1 : 0)
        let needsEpilogue = epilogue.bias != nil || epilogue.clamps
        withUnsafePointer(to: &parameters) { pointer in
            qf_fp32_gemm(isa.rawValue, m, n, k, packedA, b, ldb, transposeB ? 1 : 0, c, ldc, accumulate ? 1 : 0,
                         needsEpilogue ? pointer : nil, streamB ? 1 : 0)
        }
    }
}

/// What `GEMM` does to each finished element of C, fused into the micro-kernel's store (so a convolution's bias
/// and ReLU/ReLU6 cost no extra pass over the output): `c += bias[row]`, then `c = min(max(c, minimum), maximum)`.
/// NaN passes through the clamp.
public struct GEMMEpilogue {
    /// One value per row of C, or nil.
    public var bias: UnsafePointer<Float>?
    public var minimum: Float
    public var maximum: Float

    public init(bias: UnsafePointer<Float>? = nil, minimum: Float = -.infinity, maximum: Float = .infinity) {
        self.bias = bias
        self.minimum = minimum
        self.maximum = maximum
    }

    /// Neither bias nor clamp.
    public static var none: GEMMEpilogue { GEMMEpilogue() }

    var clamps: Bool { minimum > -.infinity || maximum < .infinity }
}

/// A (rows × depth) left-hand matrix packed for `GEMM` on one instruction set: panels of that ISA's micro-kernel
/// height (`FP32InstructionSet.gemmRowTile`), each stored k-major (`depth × rowTile`, zero-padded past the last
/// row), so any depth slice of a panel is contiguous and the micro-kernel broadcasts one value per row and step.
public struct PackedMatrixA: Sendable {
    public let rows: Int
    public let depth: Int
    /// The GEMM path this matrix is packed for (the panel height depends on it).
    public let instructionSet: FP32InstructionSet
    let storage: [Float]

    /// Packs `a` (rows × depth, leading dimension `lda`; or its transpose when `transposed`).
    public init(rows: Int, depth: Int, a: UnsafePointer<Float>, lda: Int, transposed: Bool = false,
                instructionSet: FP32InstructionSet = .preferred) {
        precondition(instructionSet.isSupported, "PackedMatrixA: this CPU cannot run the \(instructionSet) path")
        self.rows = rows
        self.depth = depth
        self.instructionSet = instructionSet
        let rowTile = Int32(instructionSet.gemmRowTile)
        let count = Int(qf_fp32_packed_a_size(rows, depth, rowTile))
        // Never empty, so the storage always has a base address to hand to C (k = 0 never reads it).
        storage = [Float](unsafeUninitializedCapacity: max(count, 1)) { buffer, initialized in
            if count > 0 {
                qf_fp32_pack_a(rows, depth, a, lda, transposed ? 1 : 0, rowTile, buffer.baseAddress!)
                initialized = count
            } else {
                buffer[0] = 0
                initialized = 1
            }
        }
    }

    /// Packs a row-major `rows × depth` array.
    public init(rows: Int, depth: Int, values: [Float], instructionSet: FP32InstructionSet = .preferred) {
        precondition(values.count == rows * depth, "PackedMatrixA: \(values.count) values for \(rows)×\(depth)")
        if values.isEmpty {
            self.rows = rows
            self.depth = depth
            self.instructionSet = instructionSet
            self.storage = [0]
            return
        }
        self = values.withUnsafeBufferPointer {
            PackedMatrixA(rows: rows, depth: depth, a: $0.baseAddress!, lda: depth, instructionSet: instructionSet)
        }
    }
}
