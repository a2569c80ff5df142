import Foundation

/// Produces batches of another source on a background thread, up to `depth` ahead, so the training loop never
/// waits for shuffling, copying and augmentation. The order is exactly the wrapped source's.
public final class PrefetchingBatches: BatchSource {
    public let batchesPerEpoch: Int
    private let queue: BatchQueue
    private let worker: Thread

    public init<Source: BatchSource & Sendable>(_ source: Source, depth: Int = 2) {
        precondition(depth >= 1, "prefetch depth must be ≥ 1")
        batchesPerEpoch = source.batchesPerEpoch
        let queue = BatchQueue(capacity: depth)
        self.queue = queue
        worker = Thread { [source] in
            var source = source
            while queue.put(Result { try source.next() }) {}
        }
        worker.name = "qatflow.prefetch"
        worker.start()
    }

    deinit {
        queue.close()
    }

    public func next() throws -> Batch {
        try queue.take().get()
    }
}

/// A bounded blocking queue between the prefetch thread and the trainer. `@unchecked Sendable` is sound: every
/// access to `items` and `closed` happens while holding `condition`.
final class BatchQueue: @unchecked Sendable {
    private let condition = NSCondition()
    private var items: [Result<Batch, Error>] = []
    private var closed = false
    private let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
    }

    /// Waits for room; false once the queue is closed (the producer then stops).
    func put(_ batch: Result<Batch, Error>) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while items.count >= capacity && !closed { condition.wait() }
        if closed { return false }
        items.append(batch)
        condition.broadcast()
        return true
    }

    func take() -> Result<Batch, Error> {
        condition.lock()
        defer { condition.unlock() }
        while items.isEmpty { condition.wait() }
        let batch = items.removeFirst()
        condition.broadcast()
        return batch
    }

    func close() {
        condition.lock()
        closed = true
        items.removeAll()
        condition.broadcast()
        condition.unlock()
    }
}
