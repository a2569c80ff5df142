import Tensor

/// What one `FloatExecutor.run` lends its operators: the thread count and a pool of float buffers.
///
/// Buffers of values that no later node reads are recycled into the pool and handed out again for new outputs,
/// within a run and across runs, so a steady-state run mostly reuses memory instead of faulting in fresh pages.
/// Reuse is safe even when a buffer is still shared (a Reshape output aliases its input, a caller keeps its input
/// tensor): Swift arrays copy on write, so a shared buffer is never overwritten, only not reused.
final class ExecutionContext {
    let threads: Int
    private var free: [[Float]] = []
    /// Bounds what the pool keeps alive between runs.
    private let capacity = 24

    init(threads: Int) {
        self.threads = threads
    }

    /// An array of `count` elements all equal to `value`, from the smallest pooled buffer that fits.
    func buffer(count: Int, repeating value: Float) -> [Float] {
        var best: Int?
        for (index, candidate) in free.enumerated() where candidate.capacity >= count {
            if best == nil || candidate.capacity < free[best!].capacity { best = index }
        }
        guard let best else { return [Float](repeating: value, count: count) }
        var buffer = free.remove(at: best)
        if buffer.count > count {
            buffer.removeLast(buffer.count - count)
        } else {
            buffer.append(contentsOf: repeatElement(value, count: count - buffer.count))
        }
        buffer.withUnsafeMutableBufferPointer { $0.update(repeating: value) }
        return buffer
    }

    /// An array of `count` elements with unspecified contents (pooled or fresh), for outputs the caller overwrites
    /// completely: saves the fill pass of `buffer(count:repeating:)`.
    func uninitializedBuffer(count: Int) -> [Float] {
        var best: Int?
        for (index, candidate) in free.enumerated() where candidate.capacity >= count {
            if best == nil || candidate.capacity < free[best!].capacity { best = index }
        }
        guard let best else {
            return [Float](unsafeUninitializedCapacity: count) { _, initialized in initialized = count }
        }
        var buffer = free.remove(at: best)
        if buffer.count > count {
            buffer.removeLast(buffer.count - count)
        } else if buffer.count < count {
            buffer.append(contentsOf: repeatElement(0, count: count - buffer.count))
        }
        return buffer
    }

    /// Offers a tensor's storage for reuse.
    func recycle(_ tensor: Tensor) {
        guard tensor.data.capacity >= 1024 else { return }
        if free.count >= capacity {
            // Keep the larger buffers: they are the expensive ones to fault in.
            guard let smallest = free.indices.min(by: { free[$0].capacity < free[$1].capacity }),
                  free[smallest].capacity < tensor.data.capacity else { return }
            free.remove(at: smallest)
        }
        free.append(tensor.data)
    }
}
