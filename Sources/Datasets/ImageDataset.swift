import Foundation

/// An image classification set as every stage reads it, whatever its source: decoded once and held in memory
/// (`LabeledImages`) or decoded from files batch by batch (`StreamingImageSet`). Labels, class names and the image
/// geometry are known up front; pixels arrive per batch, NCHW, preprocessed.
public protocol ImageDataset: Sendable {
    var count: Int { get }
    var channels: Int { get }
    var height: Int { get }
    var width: Int { get }
    /// One class index per image (0 for every image of an unlabeled set).
    var labels: [Int] { get }
    var classNames: [String] { get }
    /// False for a folder of images without class subfolders: enough to calibrate on, not to train or evaluate.
    var isLabeled: Bool { get }
    /// The images at `indices`, in that order. `augmentationSeed` (training only) draws the dataset's declared
    /// augmentation (random resized crop, flip) for each image from the seed and the image's index, so a batch
    /// is the same whichever thread decodes it; nil gives the deterministic preprocessing. Under
    /// `on_error: skip` an image that cannot be used is left out, so the batch may hold fewer images.
    func loadBatch(_ indices: [Int], augmentationSeed: UInt64?) throws -> ImageBatch
    /// Every image left out so far under `on_error: skip`, as its error message.
    var skippedImages: [String] { get }
}

extension ImageDataset {
    /// Floats per image (`channels × height × width`).
    public var valuesPerImage: Int { channels * height * width }

    public func loadBatch(_ indices: [Int]) throws -> ImageBatch { try loadBatch(indices, augmentationSeed: nil) }

    /// `count` images chosen by a seeded shuffle (or all of them), decoded into memory: calibration and
    /// statistics passes read the same small subset many times. The choice does not depend on the source's order.
    public func materializedSubset(_ count: Int, seed: UInt64) throws -> LabeledImages {
        if count >= self.count, let memory = self as? LabeledImages { return memory }
        var order = Array(0..<self.count)
        if count < self.count {
            var generator = SplitMix64(seed: seed)
            for i in 0..<(self.count - 1) { order.swapAt(i, i + Int(generator.next() % UInt64(self.count - i))) }
        }
        let wanted = min(count, self.count)
        var batch = try loadBatch(Array(order.prefix(wanted)))
        // Images skipped under on_error: skip are replaced from the rest of the shuffled order.
        var next = wanted
        while batch.count < wanted, next < order.count {
            let take = min(wanted - batch.count, order.count - next)
            batch.append(try loadBatch(Array(order[next..<(next + take)])))
            next += take
        }
        var images = try LabeledImages(count: batch.count, channels: channels, height: height, width: width,
                                       pixels: batch.pixels, labels: batch.labels, classNames: classNames)
        images.isLabeled = isLabeled
        return images
    }
}

/// Images and their labels, NCHW floats, as `loadBatch` returns them.
public struct ImageBatch: Sendable {
    public var pixels: [Float]
    public var labels: [Int]
    public var count: Int { labels.count }

    public init(pixels: [Float], labels: [Int]) {
        self.pixels = pixels
        self.labels = labels
    }

    mutating func append(_ other: ImageBatch) {
        pixels += other.pixels
        labels += other.labels
    }
}

extension LabeledImages: ImageDataset {
    /// In-memory images carry no augmentation (declared augmentation makes a set stream), so the seed is unused.
    public func loadBatch(_ indices: [Int], augmentationSeed: UInt64?) throws -> ImageBatch {
        if let bad = indices.first(where: { $0 < 0 || $0 >= count }) {
            throw DatasetError.invalidArgument(reason: "image index \(bad) outside 0..<\(count)")
        }
        let (pixels, labels) = batch(indices)
        return ImageBatch(pixels: pixels, labels: labels)
    }
}

/// Vigna's SplitMix64: a small seedable generator, the same sequence on every machine.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    /// The generator's whole state (training derives independent streams from it).
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform double in [0, 1).
    public mutating func nextUnit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}
