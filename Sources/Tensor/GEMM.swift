/// Single-precision matrix multiply `C = A·B` or `C += A·B` (row-major, leading dimensions), blocked and packed
/// in the GotoBLAS way: B is packed into `columnTile`-wide panels per `depthBlock` slice, A into `rowTile`-tall
/// panels, and a register-tiled micro-kernel multiplies one A panel by one B panel.
///
/// Written as `acc += a * b` on SIMD vectors (never `addProduct`, which becomes a libm `fmaf` call per lane when
/// the build does not enable FMA), so it is portable and vectorises to whatever the target CPU baseline allows.
public enum GEMM {
    /// Rows of A (and C) per micro-kernel tile.
    public static let rowTile = 6
    /// Columns of B (and C) per micro-kernel tile; one `SIMD8<Float>` per row.
    public static let columnTile = 8
    /// Depth (k) per packed block: a 6×256 A panel plus an 8×256 B panel stay in L1.
    static let depthBlock = 256
    /// Columns per packed B block: 256×512 floats = 512 KiB, meant for L2.
    static let columnBlock = 512

    /// `C[m×n] (+)= A[m×k] · B[k×n]`. `transposeA` means `a` holds Aᵀ (k×m, leading dimension `lda`), likewise `b`.
    /// With `accumulate == false` C is overwritten (its previous contents are ignored, even NaN).
    public static func multiply(m: Int, n: Int, k: Int,
                                a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
                                b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool = false, threads: Int = 1) {
        guard m > 0, n > 0 else { return }
        let packed = PackedMatrixA(rows: m, depth: k, a: a, lda: lda, transposed: transposeA)
        multiply(packedA: packed, n: n, b: b, ldb: ldb, transposeB: transposeB, c: c, ldc: ldc,
                 accumulate: accumulate, threads: threads)
    }

    /// `C[m×n] (+)= A · B` with A packed beforehand (convolution and fully-connected weights are packed once at
    /// prepare time). Threads split the columns of C.
    public static func multiply(packedA: PackedMatrixA, n: Int,
                                b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
                                c: UnsafeMutablePointer<Float>, ldc: Int,
                                accumulate: Bool = false, threads: Int = 1) {
        let m = packedA.rows, k = packedA.depth
        guard m > 0, n > 0 else { return }
        if k == 0 {
            if !accumulate {
                for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) }
            }
            return
        }
        let panels = (n + columnTile - 1) / columnTile
        // A thread hand-off costs tens of microseconds: split only when each worker gets ≥ ~256K multiply-adds.
        let workers = max(1, min(threads, panels, (m * n * k) / 262_144 + 1))
        if workers == 1 {
            multiplyColumns(packedA, columns: 0..<n, b: b, ldb: ldb, transposeB: transposeB,
                            c: c, ldc: ldc, accumulate: accumulate)
            return
        }
        let sharedB = Parallel.SharedPointer(b), sharedC = Parallel.SharedMutablePointer(c)
        Parallel.forEach(count: workers, threads: workers) { worker in
            let panelRange = Parallel.chunk(worker, of: workers, count: panels)
            let columns = (panelRange.lowerBound * columnTile)..<min(n, panelRange.upperBound * columnTile)
            multiplyColumns(packedA, columns: columns, b: sharedB.base, ldb: ldb, transposeB: transposeB,
                            c: sharedC.base, ldc: ldc, accumulate: accumulate)
        }
    }

    /// One thread's share: the given columns of C, all rows.
    static func multiplyColumns(_ packedA: PackedMatrixA, columns: Range<Int>,
                                b: UnsafePointer<Float>, ldb: Int, transposeB: Bool,
                                c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        guard !columns.isEmpty else { return }
        let m = packedA.rows, k = packedA.depth
        let blockColumns = min(columnBlock, columns.count)
        let panelCapacity = ((blockColumns + columnTile - 1) / columnTile) * columnTile * min(depthBlock, k)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: panelCapacity) { packedB in
            packedA.storage.withUnsafeBufferPointer { packedABuffer in
                let aBase = packedABuffer.baseAddress!
                var jc = columns.lowerBound
                while jc < columns.upperBound {
                    let nc = min(columnBlock, columns.upperBound - jc)
                    var pc = 0
                    while pc < k {
                        let kc = min(depthBlock, k - pc)
                        packB(b: b, ldb: ldb, transposed: transposeB, depthStart: pc, depth: kc,
                              columnStart: jc, columns: nc, into: packedB.baseAddress!)
                        let accumulateBlock = accumulate || pc > 0
                        var jr = 0
                        while jr < nc {
                            let nr = min(columnTile, nc - jr)
                            let bPanel = packedB.baseAddress! + (jr / columnTile) * columnTile * kc
                            var ir = 0
                            while ir < m {
                                let mr = min(rowTile, m - ir)
                                let aPanel = aBase + (ir / rowTile) * rowTile * k + pc * rowTile
                                microKernel(depth: kc, a: aPanel, b: bPanel, c: c + ir * ldc + jc + jr, ldc: ldc,
                                            rows: mr, columns: nr, accumulate: accumulateBlock)
                                ir += rowTile
                            }
                            jr += columnTile
                        }
                        pc += kc
                    }
                    jc += nc
                }
            }
        }
    }

    /// Packs B[depthStart..<+depth, columnStart..<+columns] into column panels: panel p holds, for each k,
    /// `columnTile` consecutive values (zero-padded past the last column).
    @inline(__always)
    static func packB(b: UnsafePointer<Float>, ldb: Int, transposed: Bool, depthStart: Int, depth: Int,
                      columnStart: Int, columns: Int, into packed: UnsafeMutablePointer<Float>) {
        var destination = packed
        var j0 = 0
        while j0 < columns {
            let width = min(columnTile, columns - j0)
            for kk in 0..<depth {
                let row = depthStart + kk
                if transposed {
                    for j in 0..<width { destination[j] = b[(columnStart + j0 + j) * ldb + row] }
                } else {
                    let source = b + row * ldb + columnStart + j0
                    if width == columnTile {
                        UnsafeMutableRawPointer(destination).storeBytes(
                            of: UnsafeRawPointer(source).loadUnaligned(as: SIMD8<Float>.self), as: SIMD8<Float>.self)
                        destination += columnTile
                        continue
                    }
                    for j in 0..<width { destination[j] = source[j] }
                }
                for j in width..<columnTile { destination[j] = 0 }
                destination += columnTile
            }
            j0 += columnTile
        }
    }

    /// C tile (rows × columns ≤ 6 × 8) (+)= A panel (depth × 6) · B panel (depth × 8).
    @inline(__always)
    static func microKernel(depth: Int, a: UnsafePointer<Float>, b: UnsafePointer<Float>,
                            c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, columns: Int, accumulate: Bool) {
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>()
        var c3 = SIMD8<Float>(), c4 = SIMD8<Float>(), c5 = SIMD8<Float>()
        var ap = a, bp = UnsafeRawPointer(b)
        for _ in 0..<depth {
            let bv = bp.loadUnaligned(as: SIMD8<Float>.self)
            c0 += SIMD8(repeating: ap[0]) * bv
            c1 += SIMD8(repeating: ap[1]) * bv
            c2 += SIMD8(repeating: ap[2]) * bv
            c3 += SIMD8(repeating: ap[3]) * bv
            c4 += SIMD8(repeating: ap[4]) * bv
            c5 += SIMD8(repeating: ap[5]) * bv
            ap += rowTile
            bp += columnTile * MemoryLayout<Float>.stride
        }
        if columns == columnTile {
            @inline(__always) func store(_ value: SIMD8<Float>, row: Int) {
                let target = UnsafeMutableRawPointer(c + row * ldc)
                if accumulate {
                    target.storeBytes(of: target.loadUnaligned(as: SIMD8<Float>.self) + value, as: SIMD8<Float>.self)
                } else {
                    target.storeBytes(of: value, as: SIMD8<Float>.self)
                }
            }
            store(c0, row: 0)
            if rows > 1 { store(c1, row: 1) }
            if rows > 2 { store(c2, row: 2) }
            if rows > 3 { store(c3, row: 3) }
            if rows > 4 { store(c4, row: 4) }
            if rows > 5 { store(c5, row: 5) }
            return
        }
        let tile = (c0, c1, c2, c3, c4, c5)
        withUnsafeBytes(of: tile) { raw in
            let values = raw.bindMemory(to: Float.self)
            for row in 0..<rows {
                let target = c + row * ldc
                for column in 0..<columns {
                    let value = values[row * columnTile + column]
                    target[column] = accumulate ? target[column] + value : value
                }
            }
        }
    }
}

/// A (rows × depth) left-hand matrix packed for `GEMM`: panels of `GEMM.rowTile` rows, each stored k-major
/// (`depth × rowTile`, zero-padded past the last row), so any depth slice of a panel is contiguous.
public struct PackedMatrixA: Sendable {
    public let rows: Int
    public let depth: Int
    let storage: [Float]

    /// Packs `a` (rows × depth, leading dimension `lda`; or its transpose when `transposed`).
    public init(rows: Int, depth: Int, a: UnsafePointer<Float>, lda: Int, transposed: Bool = false) {
        self.rows = rows
        self.depth = depth
        let tile = GEMM.rowTile
        let panels = (rows + tile - 1) / tile
        storage = [Float](unsafeUninitializedCapacity: panels * tile * depth) { buffer, initialized in
            var destination = buffer.baseAddress!
            for panel in 0..<panels {
                for kk in 0..<depth {
                    for r in 0..<tile {
                        let row = panel * tile + r
                        if row < rows {
                            destination[r] = transposed ? a[kk * lda + row] : a[row * lda + kk]
                        } else {
                            destination[r] = 0
                        }
                    }
                    destination += tile
                }
            }
            initialized = panels * tile * depth
        }
    }

    /// Packs a row-major `rows × depth` array.
    public init(rows: Int, depth: Int, values: [Float]) {
        precondition(values.count == rows * depth, "PackedMatrixA: \(values.count) values for \(rows)×\(depth)")
        if values.isEmpty {
            self.rows = rows
            self.depth = depth
            self.storage = [Float](repeating: 0, count: ((rows + GEMM.rowTile - 1) / GEMM.rowTile) * GEMM.rowTile * depth)
            return
        }
        self = values.withUnsafeBufferPointer { PackedMatrixA(rows: rows, depth: depth, a: $0.baseAddress!, lda: depth) }
    }
}
