import Foundation
import XCTest
@testable import Datasets

/// CIFAR10Reader on files in the official binary layout, built byte by byte so every pixel is known.
final class CIFAR10ReaderTests: XCTestCase {
    /// Sample (channel, y, x) of image `image` (numbered across the whole split).
    static func sample(image: Int, channel: Int, y: Int, x: Int) -> UInt8 {
        UInt8((image * 31 + channel * 97 + y * 7 + x * 3) % 256)
    }

    /// One record per label: the label byte, then the red, green and blue planes, each 32×32 row-major.
    static func batch(labels: [UInt8], firstImage: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        for (offset, label) in labels.enumerated() {
            bytes.append(label)
            for channel in 0..<3 {
                for y in 0..<32 {
                    for x in 0..<32 { bytes.append(sample(image: firstImage + offset, channel: channel, y: y, x: x)) }
                }
            }
        }
        return bytes
    }

    /// `cifar-10-batches-bin` inside a fresh directory: five training batches of two records, a test batch of three.
    func makeBatches(meta: String? = nil) throws -> (parent: URL, folder: URL) {
        let parent = try makeTemporaryDirectory(self)
        let folder = parent.appendingPathComponent("cifar-10-batches-bin")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for batch in 0..<5 {
            let labels = [UInt8(batch * 2 % 10), UInt8((batch * 2 + 1) % 10)]
            try folder.appendingPathComponent("data_batch_\(batch + 1).bin").write(bytes: Self.batch(labels: labels, firstImage: batch * 2))
        }
        try folder.appendingPathComponent("test_batch.bin").write(bytes: Self.batch(labels: [3, 9, 0], firstImage: 0))
        if let meta { try meta.write(to: folder.appendingPathComponent("batches.meta.txt"), atomically: true, encoding: .utf8) }
        return (parent, folder)
    }

    func testReadsBothSplitsAsInterleavedRGB() throws {
        let names = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        // The official file ends with a blank line; blank lines anywhere are ignored.
        let (parent, folder) = try makeBatches(meta: names[0..<5].joined(separator: "\n") + "\n\n" + names[5...].joined(separator: "\r\n") + "\n\n")

        // Both the batches folder and its parent locate the files.
        XCTAssertEqual(try CIFAR10Reader.files(split: .train, in: parent).map(\.lastPathComponent), CIFAR10Reader.trainFiles)
        XCTAssertEqual(try CIFAR10Reader.files(split: .test, in: folder), [folder.appendingPathComponent("test_batch.bin")])

        let train = try CIFAR10Reader.read(split: .train, in: parent)
        XCTAssertEqual(train.labels, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], "batch files in order 1...5")
        XCTAssertEqual(train.classNames, names)
        guard case let .bytes(count, height, width, channels, samples) = train.images else {
            return XCTFail("CIFAR-10 images are bytes")
        }
        XCTAssertEqual([count, height, width, channels], [10, 32, 32, 3])
        // Hand-picked pixels first (a readable failure), then every sample.
        XCTAssertEqual(Array(samples[0..<3]), [0, 97, 194], "image 0, pixel (0, 0): R, G, B from the three planes")
        let pixel = ((7 * 32 + 5) * 32 + 17) * 3  // image 7, y 5, x 17
        XCTAssertEqual(Array(samples[pixel..<pixel + 3]), (0..<3).map { Self.sample(image: 7, channel: $0, y: 5, x: 17) })
        XCTAssertEqual(samples[samples.count - 1], Self.sample(image: 9, channel: 2, y: 31, x: 31))
        var expected: [UInt8] = []
        for image in 0..<10 {
            for y in 0..<32 {
                for x in 0..<32 {
                    for channel in 0..<3 { expected.append(Self.sample(image: image, channel: channel, y: y, x: x)) }
                }
            }
        }
        XCTAssertTrue(samples == expected, "HWC interleaving of every sample")

        let test = try CIFAR10Reader.read(split: .test, in: folder)
        XCTAssertEqual(test.labels, [3, 9, 0])
        XCTAssertEqual(test.images.count, 3)
    }

    func testWithoutMetaFileTheStandardNamesAreUsed() throws {
        let (parent, _) = try makeBatches()
        XCTAssertEqual(try CIFAR10Reader.read(split: .test, in: parent).classNames,
                       ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"])
    }

    func testBadFilesNameThePathAndTheProblem() throws {
        let (parent, folder) = try makeBatches()
        let testBatch = folder.appendingPathComponent("test_batch.bin")
        let record = 3073

        try FileManager.default.removeItem(at: testBatch)
        let missing = errorDescription { _ = try CIFAR10Reader.read(split: .test, in: parent) }
        for fragment in ["missing test_batch.bin", "in \(folder.path)", "searched \(parent.path) and \(folder.path)", "cifar-10-binary.tar.gz"] {
            XCTAssertTrue(missing.contains(fragment), "«\(fragment)» in «\(missing)»")
        }
        XCTAssertFalse(missing.contains("data_batch"), "only the test split's file is listed: \(missing)")

        try testBatch.write(bytes: Array(Self.batch(labels: [1, 2], firstImage: 0).dropLast(100)))
        let cut = errorDescription { _ = try CIFAR10Reader.read(split: .test, in: folder) }
        for fragment in ["\(testBatch.path): at byte \(record)", "file size \(2 * record - 100) is not a multiple of the 3073-byte", "truncated?"] {
            XCTAssertTrue(cut.contains(fragment), "«\(fragment)» in «\(cut)»")
        }

        try testBatch.write(bytes: Self.batch(labels: [1, 2, 12], firstImage: 0))
        let label = errorDescription { _ = try CIFAR10Reader.read(split: .test, in: folder) }
        for fragment in ["\(testBatch.path): at byte \(2 * record)", "record 2: label byte is 12, expected 0–9"] {
            XCTAssertTrue(label.contains(fragment), "«\(fragment)» in «\(label)»")
        }

        try "a\nb\n".write(to: folder.appendingPathComponent("batches.meta.txt"), atomically: true, encoding: .utf8)
        try testBatch.write(bytes: Self.batch(labels: [1], firstImage: 0))
        let meta = errorDescription { _ = try CIFAR10Reader.read(split: .test, in: folder) }
        XCTAssertTrue(meta.contains("batches.meta.txt") && meta.contains("expected 10 CIFAR-10 class names"), meta)
        for message in [missing, cut, label, meta] { print(message) }
    }
}
