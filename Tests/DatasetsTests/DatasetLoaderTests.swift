import Datasets
import Foundation
import XCTest

/// File search, preprocessing and batching on a tiny synthetic "mnist" written to a temp directory.
final class DatasetLoaderTests: XCTestCase {
    /// Writes a 2-image 28×28 test split (image i has every pixel = 100·i + 55) into `directory`.
    private func writeTinySplit(in directory: URL, gzipped: Bool, labels: [UInt8] = [3, 8]) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let images = IDXBytes.images(count: 2, rows: 28, columns: 28) { image, _, _ in UInt8(100 * image + 55) }
        let labelFile = IDXBytes.labels(labels)
        let suffix = gzipped ? ".gz" : ""
        try directory.appendingPathComponent("t10k-images-idx3-ubyte" + suffix)
            .write(bytes: gzipped ? StoredGzip.compress(images) : images)
        try directory.appendingPathComponent("t10k-labels-idx1-ubyte" + suffix)
            .write(bytes: gzipped ? StoredGzip.compress(labelFile) : labelFile)
    }

    func testRelativeRootPadsAndNormalises() throws {
        let project = try makeTemporaryDirectory(self)
        try writeTinySplit(in: project.appendingPathComponent("data/tiny"), gzipped: true)
        let spec = try DatasetSpec(name: "mnist", split: .test, pad: 3, mean: 0.5, std: 0.25, root: "data/tiny")
        let set = try DatasetLoader.load(spec, projectDirectory: project)
        XCTAssertEqual([set.count, set.channels, set.height, set.width], [2, 1, 34, 34])
        XCTAssertEqual(set.labels, [3, 8])
        XCTAssertEqual(set.classNames.count, 10)
        let padValue = Float((0.0 - 0.5) / 0.25)
        XCTAssertEqual(set.pixels[0], padValue)  // top-left corner is padding
        XCTAssertEqual(set.pixels[3 * 34 + 2], padValue)  // left of the image, on its first row
        XCTAssertEqual(set.pixels[3 * 34 + 3], Float((55.0 / 255 - 0.5) / 0.25), accuracy: 1e-6)
        XCTAssertEqual(set.pixels[34 * 34 + 17 * 34 + 17], Float((155.0 / 255 - 0.5) / 0.25), accuracy: 1e-6)
        XCTAssertEqual(set.pixels[2 * 34 * 34 - 1], padValue)  // bottom-right corner of the last image
    }

    func testSearchOrderPrefersRootThenProjectThenSystem() throws {
        let project = try makeTemporaryDirectory(self)
        let spec = try DatasetSpec(name: "mnist", split: .test, root: "/elsewhere/mnist")
        let paths = DatasetLoader.searchDirectories(for: spec, projectDirectory: project).map(\.path)
        XCTAssertEqual(paths, ["/elsewhere/mnist", project.appendingPathComponent("datasets/mnist").path,
                               "/usr/share/datasets/mnist"])
        // Without a root, <project>/datasets/<name> is found first.
        try writeTinySplit(in: project.appendingPathComponent("datasets/mnist"), gzipped: false)
        let set = try DatasetLoader.load(try DatasetSpec(name: "mnist", split: .test), projectDirectory: project)
        XCTAssertEqual(set.count, 2)
    }

    func testMissingFilesNameEveryDirectoryAndTheFix() throws {
        let project = try makeTemporaryDirectory(self)
        let spec = try DatasetSpec(name: "mnist", split: .train, root: "nowhere")
        let message = errorDescription { _ = try DatasetLoader.load(spec, projectDirectory: project) }
        for directory in DatasetLoader.searchDirectories(for: spec, projectDirectory: project) {
            XCTAssertTrue(message.contains(directory.path), message)
        }
        XCTAssertTrue(message.contains("train-images-idx3-ubyte"), message)
        XCTAssertTrue(message.contains("run 'make datasets'"), message)
    }

    func testLimitKeepsTheFirstImages() throws {
        let project = try makeTemporaryDirectory(self)
        try writeTinySplit(in: project.appendingPathComponent("tiny"), gzipped: false)
        let one = try DatasetLoader.load(try DatasetSpec(name: "mnist", split: .test, limit: 1, root: "tiny"),
                                         projectDirectory: project)
        XCTAssertEqual(one.count, 1)
        XCTAssertEqual(one.labels, [3])
        XCTAssertEqual(one.pixels.count, 32 * 32)
        let more = try DatasetLoader.load(try DatasetSpec(name: "mnist", split: .test, limit: 50, root: "tiny"),
                                          projectDirectory: project)
        XCTAssertEqual(more.count, 2, "a limit above the image count keeps all images")
    }

    func testSpecMutatedIntoInvalidValuesIsRejectedByLoad() throws {
        let project = try makeTemporaryDirectory(self)
        try writeTinySplit(in: project.appendingPathComponent("tiny"), gzipped: false)
        var spec = try DatasetSpec(name: "mnist", split: .test, root: "tiny")
        spec.limit = 0
        XCTAssertTrue(errorDescription { _ = try DatasetLoader.load(spec, projectDirectory: project) }.contains("limit"))
        spec.limit = nil
        spec.pad = -3
        XCTAssertTrue(errorDescription { _ = try DatasetLoader.load(spec, projectDirectory: project) }.contains("pad"))
    }

    func testImageLabelCountMismatch() throws {
        let project = try makeTemporaryDirectory(self)
        try writeTinySplit(in: project.appendingPathComponent("tiny"), gzipped: false, labels: [1, 2, 3])
        let message = errorDescription {
            _ = try DatasetLoader.load(try DatasetSpec(name: "mnist", split: .test, root: "tiny"),
                                       projectDirectory: project)
        }
        XCTAssertTrue(message.contains("t10k-labels-idx1-ubyte: at byte 4"), message)
        XCTAssertTrue(message.contains("expected 2 labels") && message.contains("header says 3"), message)
    }

    func testReplacedFileIsNotServedFromCache() throws {
        let project = try makeTemporaryDirectory(self)
        let directory = project.appendingPathComponent("tiny")
        try writeTinySplit(in: directory, gzipped: false)
        let spec = try DatasetSpec(name: "mnist", split: .test, root: "tiny")
        XCTAssertEqual(try DatasetLoader.load(spec, projectDirectory: project).labels, [3, 8])
        try directory.appendingPathComponent("t10k-labels-idx1-ubyte").write(bytes: IDXBytes.labels([4, 5]))
        XCTAssertEqual(try DatasetLoader.load(spec, projectDirectory: project).labels, [4, 5])
    }

    func testBatchCopyIntoPointerAndArrays() throws {
        let project = try makeTemporaryDirectory(self)
        try writeTinySplit(in: project.appendingPathComponent("tiny"), gzipped: false)
        let set = try DatasetLoader.load(try DatasetSpec(name: "mnist", split: .test, root: "tiny"),
                                         projectDirectory: project)
        let stride = set.valuesPerImage
        XCTAssertEqual(stride, 1024)

        let buffer = UnsafeMutablePointer<Float>.allocate(capacity: 3 * stride)
        defer { buffer.deallocate() }
        let labelBuffer = UnsafeMutablePointer<Int>.allocate(capacity: 3)
        defer { labelBuffer.deallocate() }
        set.copyBatch([1, 0, 1], pixels: buffer, labels: labelBuffer)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buffer, count: stride)), Array(set.imagePixels(at: 1)))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: buffer + stride, count: stride)), Array(set.imagePixels(at: 0)))
        XCTAssertEqual(Array(UnsafeBufferPointer(start: labelBuffer, count: 3)), [8, 3, 8])

        var pixels: [Float] = []
        var labels: [Int] = []
        set.copyBatch(1..<2, pixels: &pixels, labels: &labels)
        XCTAssertEqual(pixels, Array(set.imagePixels(at: 1)))
        XCTAssertEqual(labels, [8])
        let batch = set.batch([Int]())
        XCTAssertTrue(batch.pixels.isEmpty && batch.labels.isEmpty)
    }
}
