import Foundation

/// The one place where work is spread over threads and where raw pointers are allowed to cross threads.
///
/// Kernels hand disjoint slices of one buffer to different threads; the compiler cannot prove that, so the
/// pointer wrappers below are `@unchecked Sendable`. Keep every such wrapper here so the unchecked surface
/// stays small and reviewable.
public enum Parallel {
    /// Calls `body(index)` for every index in `0..<count`, spreading contiguous chunks of indices over at most
    /// `threads` threads. Runs inline when one thread suffices. Returns after every call finished.
    public static func forEach(count: Int, threads: Int, _ body: @Sendable (Int) -> Void) {
        guard count > 0 else { return }
        let workers = max(1, min(threads, count))
        if workers == 1 {
            for index in 0..<count { body(index) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            let range = chunk(worker, of: workers, count: count)
            for index in range { body(index) }
        }
    }

    /// Calls `body(range)` once per worker with a contiguous, non-empty part of `0..<count`.
    public static func forEachChunk(count: Int, threads: Int, _ body: @Sendable (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let workers = max(1, min(threads, count))
        if workers == 1 {
            body(0..<count)
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { worker in
            body(chunk(worker, of: workers, count: count))
        }
    }

    /// The `worker`-th of `workers` near-equal contiguous parts of `0..<count`.
    public static func chunk(_ worker: Int, of workers: Int, count: Int) -> Range<Int> {
        let base = count / workers, extra = count % workers
        let start = worker * base + min(worker, extra)
        return start..<(start + base + (worker < extra ? 1 : 0))
    }

    /// A read-only pointer that may be captured by concurrently running closures.
    public struct SharedPointer<Element>: @unchecked Sendable {
        public let base: UnsafePointer<Element>
        public init(_ base: UnsafePointer<Element>) { self.base = base }
        public init(_ base: UnsafeMutablePointer<Element>) { self.base = UnsafePointer(base) }
    }

    /// A writable pointer that may be captured by concurrently running closures; callers guarantee that
    /// threads write disjoint elements.
    public struct SharedMutablePointer<Element>: @unchecked Sendable {
        public let base: UnsafeMutablePointer<Element>
        public init(_ base: UnsafeMutablePointer<Element>) { self.base = base }
    }
}
