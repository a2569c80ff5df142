#if os(Linux)
/// glibc's `mallopt` (declared in <malloc.h>, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
/// <malloc.h>: M_TRIM_THRESHOLD = -1, M_MMAP_MAX = -4.
private let trimThreshold: Int32 = -1, mmapMax: Int32 = -4
#endif

/// Makes glibc keep freed tensor memory for reuse.
///
/// A training step allocates and frees the same few hundred large arrays every step. By default glibc serves
/// blocks above 32 MiB (and, adaptively, smaller ones) with fresh `mmap`s and returns them with `munmap`, so
/// every step page-faults in and zeroes gigabytes of new pages (measured: a quarter of the step time in the
/// kernel). Serving everything from the heap and never trimming it turns that into plain reuse. This is a
/// process-wide setting; a training process is the one place where it is the right trade.
enum AllocatorTuning {
    static let applied: Bool = {
        #if os(Linux)
        _ = glibcMallopt(mmapMax, 0)
        _ = glibcMallopt(trimThreshold, Int32.max)
        #endif
        return true
    }()
}
