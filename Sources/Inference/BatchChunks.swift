import Foundation
import Tensor

/// A batch cut into runs of at most `size` images, for executors whose graph treats images independently
/// (`BatchSeparability`). Why: at batch 32 every MobileNet activation is megabytes and each layer streams it through
/// L3; a few images at a time keep a layer's input and output in L2, and with two threads each takes whole chunks
/// instead of the two meeting at every layer (about 100 hand-offs per MobileNetV2 pass).
struct BatchChunks: Sendable {
    let batch: Int
    let size: Int
    var count: Int { (batch + size - 1) / size }

    /// The images of chunk `index`.
    func range(_ index: Int) -> Range<Int> { (index * size)..<min(batch, (index + 1) * size) }

    /// Every input cut to chunk `index` along dimension 0.
    func slice(_ inputs: [String: Tensor], chunk index: Int) -> [String: Tensor] {
        let images = range(index)
        return inputs.mapValues { tensor in
            let perImage = tensor.count / batch
            return Tensor(shape: [images.count] + tensor.shape.dropFirst(),
                          data: Array(tensor.data[(images.lowerBound * perImage)..<(images.upperBound * perImage)]))
        }
    }

    /// Each named output of every chunk, joined along dimension 0 in chunk order.
    func join(_ parts: [[String: Tensor]], names: [String]) -> [String: Tensor] {
        var outputs: [String: Tensor] = [:]
        for name in names {
            let pieces = parts.map { $0[name]! }
            var data: [Float] = []
            data.reserveCapacity(pieces.reduce(0) { $0 + $1.count })
            for piece in pieces { data.append(contentsOf: piece.data) }
            outputs[name] = Tensor(shape: [batch] + pieces[0].shape.dropFirst(), data: data)
        }
        return outputs
    }

    /// Runs `body(chunk, worker)` for every chunk, with contiguous runs of chunks spread over at most `workers`
    /// threads, and returns the chunks' outputs in chunk order (or the first chunk's error).
    func run(workers: Int, _ body: @Sendable (_ chunk: Int, _ worker: Int) throws -> [String: Tensor]) throws -> [[String: Tensor]] {
        let results = ChunkResults(count: count)
        let workers = max(1, min(workers, count))
        let chunks = count
        Parallel.forEach(count: workers, threads: workers) { worker in
            for chunk in Parallel.chunk(worker, of: workers, count: chunks) {
                do {
                    results.store(.success(try body(chunk, worker)), at: chunk)
                } catch {
                    results.store(.failure(error), at: chunk)
                }
            }
        }
        return try results.all()
    }
}

/// Results of concurrently run chunks, in chunk order. `@unchecked Sendable` is sound: `slots` is only touched
/// under `lock`.
private final class ChunkResults: @unchecked Sendable {
    private let lock = NSLock()
    private var slots: [Result<[String: Tensor], Error>?]

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func store(_ result: Result<[String: Tensor], Error>, at index: Int) {
        lock.lock()
        defer { lock.unlock() }
        slots[index] = result
    }

    /// Every chunk's outputs, or the first chunk's error.
    func all() throws -> [[String: Tensor]] {
        lock.lock()
        defer { lock.unlock() }
        return try slots.map { try $0!.get() }
    }
}
