import Foundation

/// A dataset's images in order, `batch` at a time (the last batch may be shorter), with the next batch decoded on
/// another thread while the caller works on the current one. Evaluation reads a set this way.
public final class PrefetchedSequence {
    private let data: any ImageDataset
    private let batch: Int
    private var start = 0
    private var pending: Pending?
    /// Images asked for by the last `next()` (the batch may hold fewer under `on_error: skip`): for progress.
    public private(set) var lastRequested = 0

    public init(_ data: any ImageDataset, batch: Int) {
        precondition(batch >= 1, "batch must be ≥ 1")
        self.data = data
        self.batch = batch
    }

    /// The next batch, or nil after the last image.
    public func next() throws -> ImageBatch? {
        guard start < data.count else { return nil }
        let current = pending ?? Pending(data, indices: Array(start..<min(start + batch, data.count)))
        lastRequested = min(start + batch, data.count) - start
        start += batch
        pending = start < data.count ? Pending(data, indices: Array(start..<min(start + batch, data.count))) : nil
        return try current.wait()
    }

    /// One batch being loaded in the background. In-memory sets are only a copy away: loaded on the spot.
    private final class Pending: @unchecked Sendable {
        private let done = DispatchSemaphore(value: 0)
        private var result: Result<ImageBatch, Error>?

        init(_ data: any ImageDataset, indices: [Int]) {
            if data is LabeledImages {
                result = Result { try data.loadBatch(indices) }
                done.signal()
                return
            }
            DispatchQueue.global().async {
                self.result = Result { try data.loadBatch(indices) }
                self.done.signal()
            }
        }

        func wait() throws -> ImageBatch {
            done.wait()
            return try result!.get()
        }
    }
}
