import Datasets
import Foundation
import XCTest

/// Decoding and every failure mode of IDX files, on small synthetic files so no real dataset is needed.
final class IDXFileTests: XCTestCase {
    private let imageBytes = IDXBytes.images(count: 3, rows: 4, columns: 5) { image, row, column in
        UInt8((image * 50 + row * 10 + column) % 256)
    }
    private let labelBytes = IDXBytes.labels([7, 0, 9])

    func testReadsPlainAndGzippedFilesIdentically() throws {
        let directory = try makeTemporaryDirectory(self)
        let plain = directory.appendingPathComponent("images")
        let gzipped = directory.appendingPathComponent("images.gz")
        try plain.write(bytes: imageBytes)
        try gzipped.write(bytes: StoredGzip.compress(imageBytes))
        for url in [plain, gzipped] {
            let images = try IDXReader.readImages(url)
            XCTAssertEqual([images.count, images.rows, images.columns], [3, 4, 5])
            XCTAssertEqual(images.pixels, Array(imageBytes[16...]))
        }
        let labels = directory.appendingPathComponent("labels.gz")
        try labels.write(bytes: StoredGzip.compress(labelBytes))
        XCTAssertEqual(try IDXReader.readLabels(labels), [7, 0, 9])
    }

    func testConcatenatedGzipMembersAreOneStream() throws {
        let directory = try makeTemporaryDirectory(self)
        let url = directory.appendingPathComponent("labels.gz")
        try url.write(bytes: StoredGzip.compress(Array(labelBytes[..<6])) + StoredGzip.compress(Array(labelBytes[6...])))
        XCTAssertEqual(try IDXReader.readLabels(url), [7, 0, 9])
    }

    func testTruncatedRawImagesNameFileAndByte() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("t10k-images-idx3-ubyte")
        try url.write(bytes: Array(imageBytes.dropLast(7)))
        let message = errorDescription { _ = try IDXReader.readImages(url) }
        XCTAssertTrue(message.contains("t10k-images-idx3-ubyte"), message)
        XCTAssertTrue(message.contains("byte \(imageBytes.count - 7)"), message)
        XCTAssertTrue(message.contains("expected 60 bytes"), message)
    }

    func testTruncatedGzipImagesNameFileAndByte() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("t10k-images-idx3-ubyte.gz")
        let compressed = StoredGzip.compress(imageBytes)
        try url.write(bytes: Array(compressed.prefix(compressed.count - 30)))  // cuts into the pixel data
        let message = errorDescription { _ = try IDXReader.readImages(url) }
        XCTAssertTrue(message.contains("t10k-images-idx3-ubyte.gz"), message)
        XCTAssertTrue(message.contains("byte"), message)
        XCTAssertTrue(message.contains("gzip stream itself is truncated"), message)
    }

    func testGzipMissingOnlyItsTrailerIsStillAnError() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("labels.gz")
        try url.write(bytes: Array(StoredGzip.compress(labelBytes).dropLast(8)))
        let message = errorDescription { _ = try IDXReader.readLabels(url) }
        XCTAssertTrue(message.contains("labels.gz: at byte 11"), message)
        XCTAssertTrue(message.contains("CRC32"), message)
    }

    func testCorruptGzipIsReportedNotCrashed() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("labels.gz")
        var compressed = StoredGzip.compress(labelBytes)
        compressed[compressed.count - 6] ^= 0xff  // damage the CRC32
        try url.write(bytes: compressed)
        let message = errorDescription { _ = try IDXReader.readLabels(url) }
        XCTAssertTrue(message.contains("labels.gz") && message.contains("byte") && message.contains("corrupt gzip"),
                      message)
    }

    func testTruncatedHeader() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("images")
        try url.write(bytes: Array(imageBytes.prefix(10)))
        let message = errorDescription { _ = try IDXReader.readImages(url) }
        XCTAssertTrue(message.contains("images: at byte 10"), message)
        XCTAssertTrue(message.contains("rows per image at byte 8"), message)
    }

    func testWrongMagic() throws {
        let directory = try makeTemporaryDirectory(self)
        let labelsAsImages = directory.appendingPathComponent("swapped")
        try labelsAsImages.write(bytes: labelBytes)
        let message = errorDescription { _ = try IDXReader.readImages(labelsAsImages) }
        XCTAssertTrue(message.contains("swapped: at byte 0"), message)
        XCTAssertTrue(message.contains("expected IDX magic number 0x00000803"), message)
        XCTAssertTrue(message.contains("found 0x00000801 (this is a label file)"), message)

        let garbage = directory.appendingPathComponent("garbage")
        try garbage.write(bytes: Array("hello, world".utf8))
        XCTAssertTrue(errorDescription { _ = try IDXReader.readLabels(garbage) }.contains("0x00000801"))
    }

    func testExtraBytesAfterData() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("labels")
        try url.write(bytes: labelBytes + [1, 2])
        let message = errorDescription { _ = try IDXReader.readLabels(url) }
        XCTAssertTrue(message.contains("at byte 11") && message.contains("2 extra bytes"), message)
    }

    func testEveryTruncationIsAnErrorNeverACrash() throws {
        let directory = try makeTemporaryDirectory(self)
        let compressed = StoredGzip.compress(imageBytes)
        for (suffix, whole) in [("", imageBytes), (".gz", compressed)] {
            let url = directory.appendingPathComponent("cut" + suffix)
            for length in 0..<whole.count {
                try url.write(bytes: Array(whole.prefix(length)))
                XCTAssertThrowsError(try IDXReader.readImages(url), "prefix of \(length) bytes") { error in
                    let message = "\(error)"
                    XCTAssertTrue(message.contains("cut\(suffix): at byte"), message)
                }
            }
        }
    }

    func testLabelOutOfRangeGivesOffset() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("labels")
        try url.write(bytes: IDXBytes.labels([1, 2, 10, 3]))
        let message = errorDescription { _ = try IDXReader.readLabels(url) }
        XCTAssertTrue(message.contains("labels: at byte 10"), message)
        XCTAssertTrue(message.contains("0...9") && message.contains("found 10"), message)
    }
}
