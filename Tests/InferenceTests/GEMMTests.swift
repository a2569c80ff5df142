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
