import Datasets
import Foundation
import Tensor
import Training
import XCTest

/// Mini-batches, augmentation and prefetching.
final class DataTests: XCTestCase {
    /// 10 single-channel 2×3 images; image i holds the values 100·i + 0..5, label i % 3.
    func numberedImages(count: Int = 10) throws -> LabeledImages {
        let pixels = (0..<count).flatMap { i in (0..<6).map { Float(100 * i + $0) } }
        return try LabeledImages(count: count, channels: 1, height: 2, width: 3, pixels: pixels,
                                 labels: (0..<count).map { $0 % 3 }, classNames: ["a", "b", "c"])
    }

    func testEpochsVisitEveryImageOnceAndAreReproducible() throws {
        let images = try numberedImages()
        var batches = ShuffledBatches(images, batchSize: 5, seed: 7)
        XCTAssertEqual(batches.batchesPerEpoch, 2)
        var firstEpoch: [Int] = []
        for _ in 0..<2 {
            let batch = try batches.next()
            XCTAssertEqual(batch.images.shape, [5, 1, 2, 3])
            for slot in 0..<5 {
                let image = Int(batch.images.data[slot * 6]) / 100
                XCTAssertEqual(batch.labels[slot], image % 3, "labels travel with their images")
                firstEpoch.append(image)
            }
        }
        XCTAssertEqual(firstEpoch.sorted(), Array(0..<10))
        XCTAssertNotEqual(firstEpoch, Array(0..<10), "shuffled")
        let secondEpoch = try (0..<2).flatMap { _ in try batches.next().images.data.enumerated().filter { $0.offset % 6 == 0 }.map { Int($0.element) / 100 } }
        XCTAssertEqual(secondEpoch.sorted(), Array(0..<10))
        XCTAssertNotEqual(secondEpoch, firstEpoch, "each epoch reshuffles")

        var again = ShuffledBatches(images, batchSize: 5, seed: 7)
        var other = ShuffledBatches(images, batchSize: 5, seed: 8)
        let replay = try again.next().images, different = try other.next().images
        var original = ShuffledBatches(images, batchSize: 5, seed: 7)
        XCTAssertEqual(try original.next().images, replay)
        XCTAssertNotEqual(different, replay)
    }

    func testIncompleteLastBatchIsDropped() throws {
        var batches = ShuffledBatches(try numberedImages(), batchSize: 4, shuffle: false)
        XCTAssertEqual(batches.batchesPerEpoch, 2)
        XCTAssertEqual(try batches.next().labels, [0, 1, 2, 0])
        XCTAssertEqual(try batches.next().labels, [1, 2, 0, 1])
        XCTAssertEqual(try batches.next().labels, [0, 1, 2, 0], "a new epoch starts instead of a 2-image batch")
    }

    func testFlipAndCrop() {
        var random = SeededRandom(seed: 1)
        var image: [Float] = [1, 2, 3, 4, 5, 6]  // 2×3
        var scratch = [Float](repeating: 0, count: 6)
        Augmentation(horizontalFlip: true).apply(to: &image, channels: 1, height: 2, width: 3, scratch: &scratch, random: &random)
        XCTAssertTrue(image == [1, 2, 3, 4, 5, 6] || image == [3, 2, 1, 6, 5, 4], "\(image)")

        // Over many draws a padded crop produces every shift in −1...1 on both axes, filling with −9.
        var shifts = Set<[Float]>()
        for _ in 0..<200 {
            var crop: [Float] = [1, 2, 3, 4, 5, 6]
            Augmentation(cropPadding: 1, fillValue: -9).apply(to: &crop, channels: 1, height: 2, width: 3, scratch: &scratch, random: &random)
            XCTAssertEqual(crop.filter { $0 != -9 }.count, crop.filter { $0 != -9 }.count)
            shifts.insert(crop)
        }
        XCTAssertEqual(shifts.count, 9)
        XCTAssertTrue(shifts.contains([-9, -9, -9, 2, 3, -9]), "shift down-left: \(shifts)")
        XCTAssertTrue(shifts.contains([1, 2, 3, 4, 5, 6]))
    }

    func testPrefetchingDeliversTheSameSequence() throws {
        let images = try numberedImages(count: 30)
        let augmentation = Augmentation(cropPadding: 1, fillValue: 0, horizontalFlip: true)
        var direct = ShuffledBatches(images, batchSize: 4, augmentation: augmentation, seed: 3)
        let prefetched = PrefetchingBatches(ShuffledBatches(images, batchSize: 4, augmentation: augmentation, seed: 3), depth: 3)
        XCTAssertEqual(prefetched.batchesPerEpoch, 7)
        for _ in 0..<20 {
            let a = try direct.next(), b = try prefetched.next()
            XCTAssertEqual(a.images, b.images)
            XCTAssertEqual(a.labels, b.labels)
        }
    }
}
