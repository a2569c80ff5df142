import Foundation

/// A set whose pixels go through the image preprocessing, preprocessed batch by batch when asked, on all cores:
/// image files (`image-folder`, `image-list`: only the file list and labels stay in memory, so memory is bounded
/// whatever the number of files; ImageNet's 50,000 validation images at 224×224 would be 30 GB as floats) or
/// arrays of 8-bit pixels (`npy`, `cifar10`, `idx`: the bytes stay in memory, a quarter of their float size).
///
/// The image size is fixed when the set opens: by `random_resized_crop` or `crop` (N × N), by `resize: [H, W]`,
/// or else by the first image that decodes. An image of another size is an error naming it (or, under
/// `on_error: skip`, left out and counted).
public final class StreamingImageSet: ImageDataset, @unchecked Sendable {
    public let count: Int
    public let channels: Int
    public let height: Int
    public let width: Int
    public let labels: [Int]
    public let classNames: [String]
    public let isLabeled: Bool
    /// Decoding workers per batch (all cores by default).
    public var threads: Int

    let spec: DatasetSpec
    private let raw: RawImages
    private let tables: [[Float]]
    // Guards `skipped`, which workers of concurrent batches append to.
    private let lock = NSLock()
    // Keyed by image index: an image that fails is skipped again in every epoch but counted once.
    private var skipped: [Int: String] = [:]

    init(spec: DatasetSpec, raw: RawImages, labels: [Int], classNames: [String], isLabeled: Bool) throws {
        self.spec = spec
        self.raw = raw
        self.labels = labels
        self.count = labels.count
        self.classNames = classNames
        self.isLabeled = isLabeled
        self.threads = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let channelOrder = spec.effectiveChannels
        self.channels = channelOrder.count
        self.tables = (0..<channelOrder.count).map { c in
            (0...255).map { Float((Double($0) / 255 - spec.mean(ofChannel: c)) / spec.std(ofChannel: c)) }
        }
        let pad = spec.pad
        if let side = spec.randomResizedCrop ?? spec.crop {
            (height, width) = (side + 2 * pad, side + 2 * pad)
        } else if case .exact(let h, let w)? = spec.resize {
            (height, width) = (h + 2 * pad, w + 2 * pad)
        } else {
            (height, width) = try Self.firstImageSize(raw: raw, count: labels.count, spec: spec)
        }
    }

    public var skippedImages: [String] {
        lock.lock(); defer { lock.unlock() }
        return skipped.keys.sorted().map { skipped[$0]! }
    }

    /// The padded size of the first image that decodes (under `on_error: fail`, the first image must).
    private static func firstImageSize(raw: RawImages, count: Int, spec: DatasetSpec) throws -> (Int, Int) {
        var firstError: Error?
        for index in 0..<count {
            do {
                let image = try raw.decode(index)
                var size = (width: image.width, height: image.height)
                if case .shorterSide(let side)? = spec.resize {
                    size = ImageResampling.shorterSideSize(width: image.width, height: image.height, shorter: side)
                }
                return (size.height + 2 * spec.pad, size.width + 2 * spec.pad)
            } catch {
                guard spec.onError == .skip else { throw error }
                if firstError == nil { firstError = error }
            }
        }
        throw DatasetError.badImageSet(path: spec.path ?? spec.name, problem: "none of its \(count) images decodes; the first error: \(firstError.map { "\($0)" } ?? "")")
    }

    public func loadBatch(_ indices: [Int], augmentationSeed: UInt64?) throws -> ImageBatch {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw DatasetError.invalidArgument(reason: "image index \(bad) outside 0..<\(count)")
        }
        let stride = valuesPerImage
        var pixels = [Float](repeating: 0, count: indices.count * stride)
        var failures = [Error?](repeating: nil, count: indices.count)
        let workers = max(1, min(threads, indices.count))
        pixels.withUnsafeMutableBufferPointer { pixelBuffer in
            failures.withUnsafeMutableBufferPointer { failureBuffer in
                let output = UncheckedSendable((pixelBuffer.baseAddress!, failureBuffer))
                DispatchQueue.concurrentPerform(iterations: workers) { worker in
                    var slot = worker
                    while slot < indices.count {
                        let index = indices[slot]
                        do {
                            var draw = augmentationSeed.map {
                                ImageSetLoader.AugmentationDraw(random: SplitMix64(seed: $0 ^ (UInt64(index) &* 0xD1B5_4A32_D192_ED03)))
                            }
                            try ImageSetLoader.preprocess(raw.decode(index), path: raw.name(of: index),
                                                          spec: spec, tables: tables, height: height, width: width,
                                                          into: output.value.0 + slot * stride, draw: &draw)
                        } catch {
                            output.value.1[slot] = error
                        }
                        slot += workers
                    }
                }
            }
        }
        guard let firstFailure = failures.firstIndex(where: { $0 != nil }) else {
            return ImageBatch(pixels: pixels, labels: indices.map { labels[$0] })
        }
        guard spec.onError == .skip else { throw failures[firstFailure]! }
        var kept = ImageBatch(pixels: [], labels: [])
        kept.pixels.reserveCapacity(pixels.count)
        var messages: [Int: String] = [:]
        for (slot, index) in indices.enumerated() {
            if let failure = failures[slot] { messages[index] = "\(failure)"; continue }
            kept.pixels += pixels[slot * stride..<(slot + 1) * stride]
            kept.labels.append(labels[index])
        }
        lock.lock()
        skipped.merge(messages) { first, _ in first }
        lock.unlock()
        return kept
    }
}

/// Hands buffers to `concurrentPerform`'s workers, each of which writes only its own slots.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Where a streaming set's images come from before preprocessing.
enum RawImages: Sendable {
    /// PNG or JPEG files, decoded when read.
    case files([URL])
    /// `count × height × width × channels` interleaved 8-bit samples; `origin` names the file they came from.
    case bytes(height: Int, width: Int, channels: Int, samples: [UInt8], origin: String)

    func decode(_ index: Int) throws -> DecodedImage {
        switch self {
        case .files(let urls):
            let url = urls[index]
            let data: Data
            do { data = try Data(contentsOf: url) } catch {
                throw DatasetError.unreadableFile(path: url.path, reason: error.localizedDescription)
            }
            return try ImageDecoder.decode(data, path: url.path)
        case .bytes(let height, let width, let channels, let samples, _):
            let size = height * width * channels
            return DecodedImage(width: width, height: height, channels: channels, samples: Array(samples[index * size..<(index + 1) * size]))
        }
    }

    /// How errors name image `index`.
    func name(of index: Int) -> String {
        switch self {
        case .files(let urls): return urls[index].path
        case .bytes(_, _, _, _, let origin): return "\(origin) (image #\(index))"
        }
    }
}
