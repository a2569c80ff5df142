import Tensor
import XCTest

final class GEMMTests: XCTestCase {
    func testOddSizesAgainstNaive() {
        let sizes = [(1, 1, 1), (7, 9, 5), (13, 17, 300), (6, 8, 256), (25, 3, 513), (5, 1030, 11), (64, 70, 33)]
        for (index, (m, n, k)) in sizes.enumerated() {
            let a = randomValues(m * k, seed: UInt64(index)), b = randomValues(k * n, seed: UInt64(100 + index))
            let expected = Naive.matmul(a, b, m: m, n: n, k: k)
            for threads in [1, 2] {
                var c = [Float](repeating: .nan, count: m * n)
                GEMM.multiply(m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: &c, ldc: n, threads: threads)
                let worst = zip(c, expected).map { abs($0 - $1) }.max()!
                XCTAssertLessThan(worst, 1e-4 * Float(k), "m=\(m) n=\(n) k=\(k) threads=\(threads)")
            }
        }
    }

    func testTransposesLeadingDimensionsAndAccumulate() {
        let (m, n, k) = (11, 19, 23)
        let a = randomValues(m * k, seed: 1), b = randomValues(k * n, seed: 2)
        let expected = Naive.matmul(a, b, m: m, n: n, k: k)
        let aT = Naive.transpose(a, rows: m, columns: k), bT = Naive.transpose(b, rows: k, columns: n)
        // C embedded in a wider buffer (ldc = n + 5) starting at 1, accumulated onto.
        let ldc = n + 5
        var c = [Float](repeating: 1, count: m * ldc)
        c.withUnsafeMutableBufferPointer { buffer in
            GEMM.multiply(m: m, n: n, k: k, a: aT, lda: m, transposeA: true, b: bT, ldb: k, transposeB: true,
                          c: buffer.baseAddress!, ldc: ldc, accumulate: true, threads: 2)
        }
        for i in 0..<m {
            for j in 0..<n { XCTAssertEqual(c[i * ldc + j], expected[i * n + j] + 1, accuracy: 1e-4) }
            for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], 1, "padding column untouched") }
        }
    }

    /// The NT product behind 1×1 weight gradients: full 4×4 tiles and edge tiles, k with and without a 16-lane
    /// tail, padded rows, several segments, accumulation onto C, and every ISA path this CPU has.
    func testTransposedProductsOverSegmentsAgainstNaive() {
        for (index, (m, n, k)) in [(9, 6, 5), (8, 4, 16), (5, 11, 35), (4, 8, 64)].enumerated() {
            let segments = 3, lda = k + 3, ldb = k + 1, ldc = n + 2
            let aStride = m * lda + 7, bStride = n * ldb + 5
            let a = randomValues(segments * aStride, seed: UInt64(200 + index))
            let b = randomValues(segments * bStride, seed: UInt64(300 + index))
            var expected = [Float](repeating: 1, count: m * ldc)
            for s in 0..<segments {
                for i in 0..<m {
                    for j in 0..<n {
                        for kk in 0..<k { expected[i * ldc + j] += a[s * aStride + i * lda + kk] * b[s * bStride + j * ldb + kk] }
                    }
                }
            }
            for isa in FP32InstructionSet.supported {
                var c = [Float](repeating: 1, count: m * ldc)
                GEMM.accumulateTransposedProducts(m: m, n: n, k: k, segments: segments, a: a, lda: lda, aStride: aStride,
                                                  b: b, ldb: ldb, bStride: bStride, c: &c, ldc: ldc, instructionSet: isa)
                for i in 0..<m {
                    for j in 0..<n {
                        XCTAssertEqual(c[i * ldc + j], expected[i * ldc + j], accuracy: 1e-4 * Float(k * segments),
                                       "\(isa) m=\(m) n=\(n) k=\(k) [\(i), \(j)]")
                    }
                    for j in n..<ldc { XCTAssertEqual(c[i * ldc + j], 1, "\(isa): padding column untouched") }
                }
            }
        }
    }

    func testPackedOperandMatchesUnpacked() {
        let (m, n, k) = (10, 37, 29)
        let a = randomValues(m * k, seed: 3), b = randomValues(k * n, seed: 4)
        let packed = PackedMatrixA(rows: m, depth: k, values: a)
        var c = [Float](repeating: 0, count: m * n)
        GEMM.multiply(packedA: packed, n: n, b: b, ldb: n, c: &c, ldc: n)
        let expected = Naive.matmul(a, b, m: m, n: n, k: k)
        XCTAssertLessThan(zip(c, expected).map { abs($0 - $1) }.max()!, 1e-4)
    }

    func testParallelForEachVisitsEveryIndexOnce() {
        var hits = [Int](repeating: 0, count: 1000)
        hits.withUnsafeMutableBufferPointer { buffer in
            let shared = Parallel.SharedMutablePointer(buffer.baseAddress!)
            Parallel.forEach(count: 1000, threads: 2) { shared.base[$0] += 1 }
        }
        XCTAssertEqual(hits, [Int](repeating: 1, count: 1000))
    }
}
