/// How many threads an operation uses: a hand-off to a second thread costs roughly 5–20 µs (more on a loaded
/// machine), so a kernel call is split only when every worker gets well over that much work at the speed of the
/// ISA path it runs on.
enum Threading {
    /// Multiply-adds (or, for elementwise kernels, elements) one worker should get at least, per kind of kernel.
    enum Work {
        case gemm, depthwise, elementwise

        /// ≈ 10–20 µs of work at each path's speed on this machine class (VNNI GEMM ≈ 1,000 GOPS per core,
        /// VNNI depthwise ≈ 100, AVX2 ≈ 8× slower than VNNI, portable C ≈ 10× slower than AVX2).
        func minimumPerWorker(_ isa: KernelISA) -> Int {
            switch (self, isa) {
            case (.gemm, .avx512vnni): return 8_000_000
            case (.gemm, .avx2): return 1_000_000
            case (.gemm, .portable): return 100_000
            case (.depthwise, .avx512vnni): return 1_000_000
            case (.depthwise, .avx2): return 250_000
            case (.depthwise, .portable): return 50_000
            case (.elementwise, .avx512vnni): return 200_000
            case (.elementwise, .avx2): return 100_000
            case (.elementwise, .portable): return 25_000
            }
        }
    }

    /// Workers for `work` units of `kind` on `isa`, at most `threads` and at most `parallelism` (independent pieces).
    static func workers(threads: Int, work: Int, kind: Work, isa: KernelISA, parallelism: Int = .max) -> Int {
        max(1, min(threads, parallelism, work / kind.minimumPerWorker(isa)))
    }
}
