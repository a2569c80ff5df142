import Datasets
import Foundation
import XCTest

/// Checks against the real Fashion-MNIST files (Debian's dataset-fashion-mnist or `make datasets`).
/// These FAIL, never skip, when the data is missing: a silently skipped data test would hide a broken setup.
final class FashionMNISTTests: XCTestCase {
    private func load(_ spec: DatasetSpec) throws -> LabeledImages {
        do {
            return try DatasetLoader.load(spec, projectDirectory: repositoryDirectory)
        } catch let error as DatasetError {
            if case .filesNotFound = error {
                XCTFail("Fashion-MNIST is not installed; run 'make datasets' first. \(error)")
            }
            throw error
        }
    }

    func testTestSplitShapeLabelsAndFirstImage() throws {
        let set = try load(try DatasetSpec(shorthand: "fashion-mnist:test"))
        XCTAssertEqual([set.count, set.channels, set.height, set.width], [10_000, 1, 32, 32])
        XCTAssertEqual(set.pixels.count, 10_000 * 32 * 32)
        XCTAssertEqual(Array(set.labels.prefix(10)), [9, 2, 1, 1, 6, 1, 4, 6, 5, 7])
        var histogram = [Int](repeating: 0, count: 10)
        for label in set.labels { histogram[label] += 1 }
        XCTAssertEqual(histogram, [Int](repeating: 1_000, count: 10))
        XCTAssertEqual(set.classNames[9], "Ankle boot")

        // Reference values computed independently with numpy from the same files (np.pad then normalise).
        let first = set.imagePixels(at: 0).map(Double.init)
        let mean = first.reduce(0, +) / Double(first.count)
        XCTAssertEqual(mean, -0.44723796033994334, accuracy: 1e-5)
        let variance = first.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(first.count)
        XCTAssertEqual(variance.squareRoot(), 0.6973404165486217, accuracy: 1e-5)
        XCTAssertEqual(first[16 * 32 + 16], 0.41182025218019236, accuracy: 1e-6)  // raw pixel 110

        let padValue = Float((0 - 0.2860) / 0.3530)
        for image in [0, 9_999] {
            let pixels = Array(set.imagePixels(at: image))
            for row in 0..<32 {
                for column in 0..<32 where row < 2 || row >= 30 || column < 2 || column >= 30 {
                    XCTAssertEqual(pixels[row * 32 + column], padValue, "padding at (\(row), \(column))")
                }
            }
        }
    }

    func testLimitOnRealData() throws {
        let set = try load(try DatasetSpec(name: "fashion-mnist", split: .test, limit: 100))
        XCTAssertEqual(set.count, 100)
        XCTAssertEqual(set.labels.count, 100)
        XCTAssertEqual(set.pixels.count, 100 * 1024)
    }

    // Decoding speed is measured by `make bench`, not asserted here: timed tests fail on a busy machine.
    func testTrainSplitDecodes() throws {
        DatasetLoader.clearCache()
        let set = try load(try DatasetSpec(name: "fashion-mnist", split: .train))
        XCTAssertEqual(set.count, 60_000)
        var histogram = [Int](repeating: 0, count: 10)
        for label in set.labels { histogram[label] += 1 }
        XCTAssertEqual(histogram, [Int](repeating: 6_000, count: 10))
        let limited = try load(try DatasetSpec(name: "fashion-mnist", split: .train, limit: 10))
        XCTAssertEqual(Array(limited.pixels), Array(set.pixels.prefix(10 * 1024)), "a limited load is a prefix of the full split")
    }

    func testEveryPrefixAndByteFlipOfRealLabelsFailsCleanly() throws {
        let source = try DatasetLoader.locateFiles(
            for: try DatasetSpec(name: "fashion-mnist", split: .test), projectDirectory: repositoryDirectory).labels
        let bytes = try [UInt8](Data(contentsOf: source))
        let copy = try makeTemporaryDirectory(self).appendingPathComponent("labels-copy")
        for length in stride(from: 0, to: bytes.count, by: 29) {  // each file write costs ms
            try copy.write(bytes: Array(bytes.prefix(length)))
            XCTAssertThrowsError(try IDXReader.readLabels(copy), "prefix of \(length) bytes")
        }
        // A flipped byte may still decode (e.g. inside the gzip header's timestamp) but must never crash.
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<100 {
            var damaged = bytes
            damaged[Int.random(in: 0..<damaged.count, using: &generator)] ^= UInt8.random(in: 1...255, using: &generator)
            try copy.write(bytes: damaged)
            _ = try? IDXReader.readLabels(copy)
        }
    }

    func testTruncatedCopyOfRealFileNamesFileAndByte() throws {
        let source = try DatasetLoader.locateFiles(
            for: try DatasetSpec(name: "fashion-mnist", split: .test), projectDirectory: repositoryDirectory).images
        let bytes = try [UInt8](Data(contentsOf: source))
        let copy = try makeTemporaryDirectory(self).appendingPathComponent(source.lastPathComponent)
        try copy.write(bytes: Array(bytes.prefix(bytes.count / 2)))
        let message = errorDescription { _ = try IDXReader.readImages(copy) }
        XCTAssertTrue(message.contains(source.lastPathComponent), message)
        XCTAssertTrue(message.contains("byte"), message)
    }
}
