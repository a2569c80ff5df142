/// A preprocessed image classification set held in memory: NCHW float pixels (already padded and normalised)
/// and one integer class label per image.
public struct LabeledImages: Sendable {
    public let count: Int
    public let channels: Int
    public let height: Int
    public let width: Int
    /// `count × channels × height × width` values, NCHW, normalised and padded.
    public let pixels: [Float]
    /// One class index per image, each in `0..<classNames.count`.
    public let labels: [Int]
    /// Human-readable class names in label order.
    public let classNames: [String]
    /// False for a folder of images without class subfolders: enough to calibrate on, not to train or evaluate.
    public internal(set) var isLabeled = true
    /// The images an image set left out under `on_error: skip`, each as its error message.
    public internal(set) var skippedImages: [String] = []

    /// Floats per image (`channels × height × width`): the stride between consecutive images in `pixels`.
    public var valuesPerImage: Int { channels * height * width }

    public init(count: Int, channels: Int, height: Int, width: Int, pixels: [Float], labels: [Int],
                classNames: [String]) throws {
        guard count >= 0, channels > 0, height > 0, width > 0 else {
            throw DatasetError.invalidArgument(
                reason: "LabeledImages needs count ≥ 0 and positive channels/height/width, "
                    + "got \(count)×\(channels)×\(height)×\(width)")
        }
        guard pixels.count == count * channels * height * width else {
            throw DatasetError.invalidArgument(
                reason: "LabeledImages expected \(count * channels * height * width) pixel values "
                    + "(\(count)×\(channels)×\(height)×\(width)), got \(pixels.count)")
        }
        guard labels.count == count else {
            throw DatasetError.invalidArgument(
                reason: "LabeledImages expected \(count) labels (one per image), got \(labels.count)")
        }
        if let bad = labels.firstIndex(where: { $0 < 0 || $0 >= classNames.count }) {
            throw DatasetError.invalidArgument(
                reason: "label #\(bad) is \(labels[bad]), outside 0..<\(classNames.count) (the class count)")
        }
        self.count = count
        self.channels = channels
        self.height = height
        self.width = width
        self.pixels = pixels
        self.labels = labels
        self.classNames = classNames
    }

    /// The pixels of one image (CHW), without copying.
    public func imagePixels(at index: Int) -> ArraySlice<Float> {
        precondition(index >= 0 && index < count, "image index \(index) outside 0..<\(count)")
        return pixels[index * valuesPerImage..<(index + 1) * valuesPerImage]
    }

    /// Copies the images at `indices`, in that order, into `destination` (which must hold
    /// `indices.count × valuesPerImage` floats) and, if given, their labels into `labelDestination`.
    /// Training and evaluation loops call this once per batch into a buffer they reuse, so it never allocates.
    public func copyBatch<Indices: Collection<Int>>(
        _ indices: Indices, pixels destination: UnsafeMutablePointer<Float>,
        labels labelDestination: UnsafeMutablePointer<Int>? = nil
    ) {
        let stride = valuesPerImage
        pixels.withUnsafeBufferPointer { source in
            for (slot, index) in indices.enumerated() {
                precondition(index >= 0 && index < count, "image index \(index) outside 0..<\(count)")
                (destination + slot * stride).update(from: source.baseAddress! + index * stride, count: stride)
                labelDestination?[slot] = labels[index]
            }
        }
    }

    /// Array form of `copyBatch`: resizes `pixels`/`labels` to exactly the batch (reusing their storage when
    /// they already have that size, as they do from the second batch of a fixed batch size on).
    public func copyBatch<Indices: Collection<Int>>(_ indices: Indices, pixels: inout [Float], labels: inout [Int]) {
        let batchSize = indices.count
        if pixels.count != batchSize * valuesPerImage {
            pixels = [Float](repeating: 0, count: batchSize * valuesPerImage)
        }
        if labels.count != batchSize {
            labels = [Int](repeating: 0, count: batchSize)
        }
        guard batchSize > 0 else { return }  // empty arrays may have no base address
        pixels.withUnsafeMutableBufferPointer { pixelBuffer in
            labels.withUnsafeMutableBufferPointer { labelBuffer in
                copyBatch(indices, pixels: pixelBuffer.baseAddress!, labels: labelBuffer.baseAddress!)
            }
        }
    }

    /// Convenience: a freshly allocated batch.
    public func batch<Indices: Collection<Int>>(_ indices: Indices) -> (pixels: [Float], labels: [Int]) {
        var pixels: [Float] = []
        var labels: [Int] = []
        copyBatch(indices, pixels: &pixels, labels: &labels)
        return (pixels, labels)
    }
}
