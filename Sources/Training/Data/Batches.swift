import Datasets
import Tensor

/// One mini-batch: NCHW images and their class labels.
public struct Batch: Sendable {
    public var images: Tensor
    public var labels: [Int]

    public init(images: Tensor, labels: [Int]) {
        precondition(images.shape.first == labels.count, "batch: \(images.shape) images for \(labels.count) labels")
        self.images = images
        self.labels = labels
    }

    public var count: Int { labels.count }
}

/// An endless stream of batches (epoch after epoch).
public protocol BatchSource {
    /// Batches per epoch.
    var batchesPerEpoch: Int { get }
    /// Throws when an image cannot be read (a file that vanished, a broken image under `on_error: fail`).
    mutating func next() throws -> Batch
}

/// Shuffled, optionally augmented mini-batches from an `ImageDataset`, reproducible from `seed`: epoch `e` uses
/// its own permutation and augmentation stream, so the sequence of batches is a pure function of the seed.
/// The last incomplete batch of an epoch is dropped (BatchNorm dislikes tiny batches; every image still appears
/// in some epoch because each epoch reshuffles). The dataset's own declared augmentation (random resized crop,
/// flip) is drawn per image from the epoch's stream; `augmentation` acts on the preprocessed floats.
public struct ShuffledBatches: BatchSource, Sendable {
    public let images: any ImageDataset
    public let batchSize: Int
    public let augmentation: Augmentation
    public let shuffle: Bool
    private let seed: SeededRandom
    private var order: [Int] = []
    private var position = 0
    public private(set) var epoch = -1
    private var random: SeededRandom

    public init(_ images: any ImageDataset, batchSize: Int, augmentation: Augmentation = Augmentation(), shuffle: Bool = true,
                seed: UInt64 = 0) {
        precondition(batchSize > 0 && batchSize <= images.count,
                     "batch size \(batchSize) must be in 1...\(images.count) (the number of images)")
        self.images = images
        self.batchSize = batchSize
        self.augmentation = augmentation
        self.shuffle = shuffle
        self.seed = SeededRandom(seed: seed)
        self.random = self.seed
    }

    public var batchesPerEpoch: Int { images.count / batchSize }

    public mutating func next() throws -> Batch {
        if epoch < 0 || position + batchSize > order.count { startEpoch() }
        let indices = Array(order[position..<(position + batchSize)])
        position += batchSize
        var loaded = try images.loadBatch(indices, augmentationSeed: augmentationSeed())
        // Images left out under on_error: skip are made up from the following ones, so every batch is full.
        var attempts = 0
        while loaded.count < batchSize {
            if position >= order.count { startEpoch() }
            attempts += 1
            guard attempts <= images.count else {
                throw DatasetError.invalidArgument(reason: "no usable images left to fill a batch of \(batchSize): \(images.skippedImages.count) images were skipped (\(images.skippedImages.first ?? ""))")
            }
            let take = min(batchSize - loaded.count, order.count - position)
            let more = try images.loadBatch(Array(order[position..<(position + take)]), augmentationSeed: augmentationSeed())
            position += take
            loaded.pixels += more.pixels
            loaded.labels += more.labels
        }
        var pixels = loaded.pixels
        let labels = loaded.labels
        if augmentation.isActive {
            let perImage = images.valuesPerImage
            pixels.withUnsafeMutableBufferPointer { buffer in
                withUnsafeTemporaryAllocation(of: Float.self, capacity: perImage) { scratch in
                    for slot in 0..<batchSize {
                        augmentation.apply(to: buffer.baseAddress! + slot * perImage, channels: images.channels,
                                           height: images.height, width: images.width, scratch: scratch.baseAddress!,
                                           random: &random)
                    }
                }
            }
        }
        return Batch(images: Tensor(shape: [batchSize, images.channels, images.height, images.width], data: pixels), labels: labels)
    }

    /// The seed of the dataset's declared augmentation for the batch at `position`: a function of the seed, the
    /// epoch and the position only (drawing it from `random` would change the float augmentation's stream).
    private func augmentationSeed() -> UInt64 {
        var stream = seed.derived(0xA06_0000 &+ UInt64(epoch) &* 0x1_0000_0000 &+ UInt64(position))
        return stream.next()
    }

    private mutating func startEpoch() {
        epoch += 1
        position = 0
        random = seed.derived(UInt64(epoch) &+ 1)
        order = Array(0..<images.count)
        if shuffle { order.shuffle(using: &random) }
    }
}

/// Random crop after zero padding (`padding` pixels of `fillValue` on each side, then a crop of the original
/// size) and random horizontal flip, applied per image.
public struct Augmentation: Sendable {
    public var cropPadding: Int
    /// Value of the padding, in the normalised space of the images (for Fashion-MNIST normalised with
    /// mean 0.2860 / std 0.3530, a black pixel is −0.8102).
    public var fillValue: Float
    public var horizontalFlip: Bool

    public init(cropPadding: Int = 0, fillValue: Float = 0, horizontalFlip: Bool = false) {
        precondition(cropPadding >= 0, "crop padding must be ≥ 0")
        self.cropPadding = cropPadding
        self.fillValue = fillValue
        self.horizontalFlip = horizontalFlip
    }

    public var isActive: Bool { cropPadding > 0 || horizontalFlip }

    /// Augments one CHW image in place; `scratch` holds `channels·height·width` floats.
    public func apply(to image: UnsafeMutablePointer<Float>, channels: Int, height: Int, width: Int,
                      scratch: UnsafeMutablePointer<Float>, random: inout SeededRandom) {
        let dy = cropPadding > 0 ? random.nextInt(below: 2 * cropPadding + 1) - cropPadding : 0
        let dx = cropPadding > 0 ? random.nextInt(below: 2 * cropPadding + 1) - cropPadding : 0
        let flip = horizontalFlip && random.next() & 1 == 1
        guard dy != 0 || dx != 0 || flip else { return }
        let count = channels * height * width
        scratch.update(from: image, count: count)
        for c in 0..<channels {
            let source = scratch + c * height * width, target = image + c * height * width
            for y in 0..<height {
                let sy = y + dy
                for x in 0..<width {
                    let sx = (flip ? width - 1 - x : x) + dx
                    target[y * width + x] = (sy >= 0 && sy < height && sx >= 0 && sx < width) ? source[sy * width + sx] : fillValue
                }
            }
        }
    }
}
