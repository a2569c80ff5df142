import Foundation
import XCTest
@testable import Datasets

/// The `npy`, `idx` and `cifar10` sources through `DatasetLoader`: the Fashion-MNIST test images stored each way
/// give exactly the floats the `fashion-mnist` shortcut gives (same preprocessing: gray, pad 2, mean/std).
final class ArraySourceTests: XCTestCase {
    static let images = 500
    let normalisation = (mean: [0.2860], std: [0.3530])

    func reference() throws -> LabeledImages {
        var spec = try DatasetSpec(shorthand: "fashion-mnist:test")
        spec.limit = Self.images
        return try DatasetLoader.load(spec, projectDirectory: repositoryDirectory)
    }

    func idxDirectory() throws -> URL {
        try DatasetLoader.locateFiles(for: try DatasetSpec(shorthand: "fashion-mnist:test"), projectDirectory: repositoryDirectory)
            .images.deletingLastPathComponent()
    }

    func python(_ script: String, _ arguments: [String]) throws { try runVenvPython(["-c", script] + arguments) }

    func testNPZOfUint8PixelsAndOfPreprocessedFloatsMatchTheIDXShortcut() throws {
        let directory = try makeTemporaryDirectory(self)
        let reference = try reference()
        try python("""
            import gzip, sys, numpy as np
            idx, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
            images = np.frombuffer(gzip.open(idx + '/t10k-images-idx3-ubyte.gz').read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
            labels = np.frombuffer(gzip.open(idx + '/t10k-labels-idx1-ubyte.gz').read(), np.uint8, offset=8)[:n].astype(np.int64)
            np.savez_compressed(out + '/fmnist.npz', images=images, labels=labels)
            np.save(out + '/unlabeled.npy', images[..., None])
            padded = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / np.float32(255)
            np.savez(out + '/floats.npz', images=((padded - np.float32(0.2860)) / np.float32(0.3530))[:, None], labels=labels)
            np.savez(out + '/channels_last.npz', images=np.zeros((2, 32, 32, 3), np.float32))
            """, [try idxDirectory().path, directory.path, String(Self.images)])

        let npz = try DatasetLoader.load(try DatasetSpec(imageSource: "npy", path: directory.appendingPathComponent("fmnist.npz").path, channels: .gray,
                                                         pad: 2, mean: normalisation.mean, std: normalisation.std), projectDirectory: directory)
        XCTAssertEqual(npz.pixels, reference.pixels)
        XCTAssertEqual(npz.labels, reference.labels)
        XCTAssertTrue(npz.isLabeled)

        let unlabeled = try DatasetLoader.open(try DatasetSpec(imageSource: "npy", path: "unlabeled.npy", channels: .gray, pad: 2,
                                                               mean: normalisation.mean, std: normalisation.std), projectDirectory: directory)
        XCTAssertFalse(unlabeled.isLabeled)
        XCTAssertEqual(try unlabeled.loadBatch([3, 1]).pixels, reference.batch([3, 1]).pixels)

        // float32 images are taken as preprocessed: the same floats (up to numpy's float32 rounding, which is ours).
        let floats = try DatasetLoader.load(try DatasetSpec(imageSource: "npy", path: "floats.npz"), projectDirectory: directory)
        XCTAssertEqual([floats.count, floats.channels, floats.height, floats.width], [Self.images, 1, 32, 32])
        let largest = zip(floats.pixels, reference.pixels).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(largest, 1e-6)
        let twice = errorDescription { _ = try DatasetLoader.load(try DatasetSpec(imageSource: "npy", path: "floats.npz", resize: .shorterSide(64)), projectDirectory: directory) }
        XCTAssertTrue(twice.contains("floats.npz") && twice.contains("already preprocessed") && twice.contains("resize"), twice)

        let channelsLast = errorDescription { _ = try DatasetLoader.load(try DatasetSpec(imageSource: "npy", path: "channels_last.npz"), projectDirectory: directory) }
        XCTAssertTrue(channelsLast.contains("channels_last.npz") && channelsLast.contains("looks channels-last"), channelsLast)

        try "a\nb\n".write(to: directory.appendingPathComponent("two.txt"), atomically: true, encoding: .utf8)
        let outside = errorDescription { _ = try DatasetLoader.load(try DatasetSpec(imageSource: "npy", path: "fmnist.npz", classes: "two.txt"), projectDirectory: directory) }
        XCTAssertTrue(outside.contains("fmnist.npz") && outside.contains("outside 0..<2"), outside)
    }

    func testIDXPairAndCIFARBatchesMatchTheIDXShortcut() throws {
        let reference = try reference()
        let idx = try idxDirectory()
        let pair = try DatasetLoader.load(try DatasetSpec(imageSource: "idx", path: idx.appendingPathComponent("t10k-images-idx3-ubyte.gz").path,
                                                          labels: idx.appendingPathComponent("t10k-labels-idx1-ubyte.gz").path, limit: Self.images,
                                                          pad: 2, mean: normalisation.mean, std: normalisation.std), projectDirectory: idx)
        XCTAssertEqual(pair.pixels, reference.pixels)
        XCTAssertEqual(pair.labels, reference.labels)

        // CIFAR-10's binary format (label byte, then 32×32 R, G and B planes) holding the images padded to 32 as
        // gray RGB: read as gray without padding, the same floats.
        let directory = try makeTemporaryDirectory(self)
        let batches = directory.appendingPathComponent(CIFAR10Reader.folderName)
        try FileManager.default.createDirectory(at: batches, withIntermediateDirectories: true)
        let raw = try IDXReader.readImages(idx.appendingPathComponent("t10k-images-idx3-ubyte.gz"))
        var bytes: [UInt8] = []
        for image in 0..<Self.images {
            bytes.append(UInt8(reference.labels[image]))
            var plane = [UInt8](repeating: 0, count: 32 * 32)
            for y in 0..<28 { for x in 0..<28 { plane[(y + 2) * 32 + x + 2] = raw.pixels[image * 784 + y * 28 + x] } }
            for _ in 0..<3 { bytes += plane }
        }
        try Data(bytes).write(to: batches.appendingPathComponent(CIFAR10Reader.testFile))
        let cifar = try DatasetLoader.load(try DatasetSpec(imageSource: "cifar10", split: .test, channels: .gray, mean: normalisation.mean,
                                                           std: normalisation.std, root: directory.path), projectDirectory: directory)
        XCTAssertEqual(cifar.pixels, reference.pixels)
        XCTAssertEqual(cifar.labels, reference.labels)
        XCTAssertEqual(cifar.classNames, CIFAR10Reader.defaultClassNames)
        XCTAssertEqual(try DatasetLoader.files(of: try DatasetSpec(imageSource: "cifar10", split: .test, root: directory.path), projectDirectory: directory).map(\.lastPathComponent),
                       [CIFAR10Reader.testFile])

        let missing = errorDescription { _ = try DatasetLoader.load(try DatasetSpec(imageSource: "cifar10", split: .train, root: directory.path), projectDirectory: directory) }
        XCTAssertTrue(missing.contains("data_batch_1.bin") && missing.contains(directory.path), missing)
        XCTAssertThrowsError(try DatasetSpec(imageSource: "cifar10"), "cifar10 needs a split")
        XCTAssertThrowsError(try DatasetSpec(imageSource: "npy", path: "x.npz", split: .test), "split is CIFAR-10's and the IDX shortcuts'")
    }
}
