import Foundation
import XCTest
@testable import Datasets

/// image-folder and image-list datasets on real files written by Pillow, decoded by libpng and libjpeg-turbo.
final class ImageSetTests: XCTestCase {
    static let images = 300

    /// Writes Fashion-MNIST test images with Tests/DatasetsTests/Scripts/write_images.py (the venv's Pillow).
    func writeImages(_ mode: String, into directory: URL) throws {
        let spec = try DatasetSpec(shorthand: "fashion-mnist:test")
        let idx = try DatasetLoader.locateFiles(for: spec, projectDirectory: repositoryDirectory).images.deletingLastPathComponent()
        try runVenvPython([repositoryDirectory.appendingPathComponent("Tests/DatasetsTests/Scripts/write_images.py").path,
                           mode, idx.path, directory.path, String(Self.images)])
    }

    /// The Fashion-MNIST test images as gray PNGs in class folders give the IDX loader's values exactly (same
    /// preprocessing), so any model scores the same top-1 on both.
    func testPNGClassFoldersGiveTheIDXValuesExactly() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeImages("folder", into: directory)
        let folder = try DatasetLoader.load(try DatasetSpec(imageSource: "image-folder", path: directory.path, channels: .gray, pad: 2,
                                                            mean: [0.2860], std: [0.3530]), projectDirectory: repositoryDirectory)
        var spec = try DatasetSpec(shorthand: "fashion-mnist:test")
        spec.limit = Self.images
        let idx = try DatasetLoader.load(spec, projectDirectory: repositoryDirectory)
        XCTAssertEqual(folder.count, Self.images)
        XCTAssertEqual([folder.channels, folder.height, folder.width], [1, 32, 32])
        XCTAssertEqual(folder.classNames.count, Set(idx.labels).count, "one class per subfolder present")
        // The folder is ordered by class, then file name (the IDX index): match images by that index.
        let listing = try ImageSetLoader.listFolder(directory, classNames: nil)
        for (position, entry) in listing.entries.enumerated() {
            let index = Int(entry.url.deletingPathExtension().lastPathComponent)!
            XCTAssertEqual(Array(folder.imagePixels(at: position)), Array(idx.imagePixels(at: index)), "image \(index)")
            XCTAssertEqual(folder.classNames[folder.labels[position]], listing.classNames[entry.label])
            XCTAssertTrue(folder.classNames[folder.labels[position]].hasPrefix("\(idx.labels[index])_"))
        }
    }

    /// RGB JPEGs in an image list, resized (shorter side 36, bilinear with antialiasing) and center-cropped to 32
    /// with per-channel mean/std: the same floats as torchvision's transforms on Pillow's decode.
    func testJPEGListWithResizeCropAndPerChannelNormalisationMatchesPillow() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeImages("list", into: directory)
        let spec = try DatasetSpec(imageSource: "image-list", path: directory.appendingPathComponent("list.txt").path, channels: .rgb,
                                   resize: .shorterSide(36), crop: 32, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3])
        let ours = try DatasetLoader.load(spec, projectDirectory: repositoryDirectory)
        let reference = try NPYArray.read(directory.appendingPathComponent("reference.npy"))
        XCTAssertEqual(reference.shape, [Self.images, 3, 32, 32])
        XCTAssertEqual([ours.count, ours.channels, ours.height, ours.width], reference.shape)
        let largest = zip(ours.pixels, reference.values).map { abs($0 - $1) }.max() ?? .infinity
        XCTAssertLessThanOrEqual(largest, 1e-5, "the same pixels as Pillow + torchvision (float rounding only)")
        var idx = try DatasetSpec(shorthand: "fashion-mnist:test")
        idx.limit = Self.images
        XCTAssertEqual(ours.labels, try DatasetLoader.load(idx, projectDirectory: repositoryDirectory).labels)

        var bgr = spec
        bgr.channels = .bgr
        bgr.mean = [0.3, 0.4, 0.5]
        bgr.std = [0.3, 0.25, 0.2]
        let swapped = try DatasetLoader.load(bgr, projectDirectory: repositoryDirectory)
        let plane = 32 * 32
        XCTAssertEqual(Array(swapped.pixels[0..<plane]), Array(ours.pixels[2 * plane..<3 * plane]), "bgr: channel 0 is blue")
    }

    /// Each bad input is one clear error naming the file (and line) and what was expected.
    func testBadInputsNameThePathAndTheProblem() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeImages("list", into: directory)
        let list = directory.appendingPathComponent("list.txt")
        func load(_ spec: DatasetSpec) throws { _ = try DatasetLoader.load(spec, projectDirectory: directory) }
        func listSpec(_ text: String, classes: String? = nil, resize: ImageResize? = .shorterSide(32), onError: ImageErrorPolicy? = nil) throws -> DatasetSpec {
            let file = directory.appendingPathComponent("case.txt")
            try text.write(to: file, atomically: true, encoding: .utf8)
            return try DatasetSpec(imageSource: "image-list", path: file.path, resize: resize, classes: classes, onError: onError)
        }
        let empty = directory.appendingPathComponent("empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        // A truncated JPEG, a 30×28 PNG among 28×28 JPEGs, an RGBA PNG, a text file named .jpg.
        let first = try Data(contentsOf: directory.appendingPathComponent("img/00000.jpg"))
        try first.prefix(first.count / 2).write(to: directory.appendingPathComponent("img/truncated.jpg"))
        try writePNG(width: 30, height: 28, channels: 1, to: directory.appendingPathComponent("img/wide.png"))
        try writePNG(width: 28, height: 28, channels: 4, to: directory.appendingPathComponent("img/rgba.png"))
        try Data("hello".utf8).write(to: directory.appendingPathComponent("img/text.jpg"))
        try "a\nb\n".write(to: directory.appendingPathComponent("classes.txt"), atomically: true, encoding: .utf8)

        let cases: [(String, () throws -> Void, [String])] = [
            ("missing folder", { try load(try DatasetSpec(imageSource: "image-folder", path: directory.appendingPathComponent("nowhere").path)) }, ["nowhere", "no such folder"]),
            ("empty folder", { try load(try DatasetSpec(imageSource: "image-folder", path: empty.path)) }, ["empty", "no class subfolders and no images"]),
            ("truncated JPEG", { try load(try listSpec("img/00000.jpg 1\nimg/truncated.jpg 2\n")) }, ["truncated.jpg", "JPEG"]),
            ("not an image", { try load(try listSpec("img/text.jpg 1\n")) }, ["text.jpg", "not a PNG or JPEG file"]),
            ("label out of range", { try load(try listSpec("img/00000.jpg 1\nimg/00001.jpg 7\n", classes: directory.appendingPathComponent("classes.txt").path)) }, ["case.txt:2", "label 7 is outside 0..<2"]),
            ("line without label", { try load(try listSpec("img/00000.jpg 1\nimg/00001.jpg\n")) }, ["case.txt:2", "expected 'relative/path.jpg LABEL'"]),
            ("wrong size, no resize", { try load(try listSpec("img/00000.jpg 1\nimg/wide.png 1\n", resize: nil)) }, ["wide.png", "30×28", "set resize"]),
            ("RGBA into rgb", { try load(try listSpec("img/rgba.png 1\n")) }, ["rgba.png", "alpha channel", "RGBA", "alpha: drop"]),
            ("a list given as folder", { try load(try DatasetSpec(imageSource: "image-folder", path: list.path)) }, ["list.txt", "is a file"]),
        ]
        for (name, body, fragments) in cases {
            let message = errorDescription(body)
            for fragment in fragments { XCTAssertTrue(message.contains(fragment), "\(name): «\(fragment)» in «\(message)»") }
            print("\(name) → \(message)")
        }
        // on_error: skip leaves bad files out and counts them.
        let skipping = try DatasetLoader.load(try listSpec("img/00000.jpg 1\nimg/truncated.jpg 2\nimg/text.jpg 3\nimg/00001.jpg 4\n", onError: .skip), projectDirectory: directory)
        XCTAssertEqual(skipping.count, 2)
        XCTAssertEqual(skipping.labels, [1, 4])
        XCTAssertEqual(skipping.skippedImages.count, 2)
        // alpha: drop reads the RGBA file.
        var dropping = try listSpec("img/rgba.png 1\n")
        dropping.alpha = .drop
        XCTAssertEqual(try DatasetLoader.load(dropping, projectDirectory: directory).channels, 3)
    }

    /// A set read batch by batch from its files (memory budget 0) gives exactly the images the in-memory load
    /// holds, in any order, and the same calibration subset; skipped images are counted once however often read.
    func testStreamingReadsTheSameImagesAsTheInMemoryLoad() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeImages("list", into: directory)
        let spec = try DatasetSpec(imageSource: "image-list", path: directory.appendingPathComponent("list.txt").path, channels: .rgb,
                                   resize: .shorterSide(36), crop: 32, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3])
        let memory = try DatasetLoader.load(spec, projectDirectory: repositoryDirectory)
        let opened = try DatasetLoader.open(spec, projectDirectory: repositoryDirectory, memoryBudget: 0)
        let streaming = try XCTUnwrap(opened as? StreamingImageSet, "a set over the budget streams")
        XCTAssertTrue(try DatasetLoader.open(spec, projectDirectory: repositoryDirectory) is LabeledImages, "a small set is held in memory")
        XCTAssertEqual([streaming.count, streaming.channels, streaming.height, streaming.width], [memory.count, 3, 32, 32])
        XCTAssertEqual(streaming.labels, memory.labels)
        let order = [299, 0, 17, 17, 150]
        let batch = try streaming.loadBatch(order)
        XCTAssertEqual(batch.labels, order.map { memory.labels[$0] })
        XCTAssertEqual(batch.pixels, memory.batch(order).pixels)
        let subset = try streaming.materializedSubset(50, seed: 3), inMemory = try memory.materializedSubset(50, seed: 3)
        XCTAssertEqual(subset.pixels, inMemory.pixels)
        XCTAssertEqual(subset.labels, inMemory.labels)

        let first = try Data(contentsOf: directory.appendingPathComponent("img/00000.jpg"))
        try first.prefix(first.count / 2).write(to: directory.appendingPathComponent("img/truncated.jpg"))
        try "img/00000.jpg 1\nimg/truncated.jpg 2\nimg/00001.jpg 4\n".write(to: directory.appendingPathComponent("skip.txt"), atomically: true, encoding: .utf8)
        let skipping = try DatasetLoader.open(try DatasetSpec(imageSource: "image-list", path: directory.appendingPathComponent("skip.txt").path, onError: .skip),
                                              projectDirectory: repositoryDirectory, memoryBudget: 0)
        for _ in 0..<2 { XCTAssertEqual(try skipping.loadBatch([0, 1, 2]).labels, [1, 4]) }
        XCTAssertEqual(skipping.skippedImages.count, 1)
        XCTAssertTrue(skipping.skippedImages[0].contains("truncated.jpg"), skipping.skippedImages[0])
        let failing = try DatasetLoader.open(try DatasetSpec(imageSource: "image-list", path: directory.appendingPathComponent("skip.txt").path),
                                             projectDirectory: repositoryDirectory, memoryBudget: 0)
        XCTAssertTrue(errorDescription { _ = try failing.loadBatch([0, 1, 2]) }.contains("truncated.jpg"))
    }

    /// random_resized_crop and flip: drawn per image from the seed (the same batch twice, another with another
    /// seed), inside torchvision's area and aspect bounds; without a seed (calibration, evaluation) the set reads
    /// as resize N + center crop N.
    func testRandomResizedCropAndFlipAreSeededAndBounded() throws {
        let directory = try makeTemporaryDirectory(self)
        try writeImages("list", into: directory)
        let list = directory.appendingPathComponent("list.txt").path
        let augmented = try DatasetSpec(imageSource: "image-list", path: list, randomResizedCrop: 24, flip: true)
        let set = try DatasetLoader.open(augmented, projectDirectory: repositoryDirectory)
        XCTAssertTrue(set is StreamingImageSet, "augmentation draws new crops every epoch, so the set streams")
        XCTAssertEqual([set.channels, set.height, set.width], [3, 24, 24])
        let indices = Array(0..<16)
        let once = try set.loadBatch(indices, augmentationSeed: 1), again = try set.loadBatch(indices, augmentationSeed: 1)
        XCTAssertEqual(once.pixels, again.pixels)
        XCTAssertNotEqual(once.pixels, try set.loadBatch(indices, augmentationSeed: 2).pixels)
        let plain = try DatasetLoader.load(try DatasetSpec(imageSource: "image-list", path: list, resize: .shorterSide(24), crop: 24), projectDirectory: repositoryDirectory)
        XCTAssertEqual(try set.loadBatch(indices).pixels, plain.batch(indices).pixels)
        XCTAssertThrowsError(try DatasetSpec(imageSource: "image-list", path: list, resize: .shorterSide(24), randomResizedCrop: 24))

        // Flip alone: each image is either as read or its mirror, and both happen.
        let flipping = try DatasetLoader.open(try DatasetSpec(imageSource: "image-list", path: list, flip: true), projectDirectory: repositoryDirectory)
        let straight = try DatasetLoader.load(try DatasetSpec(imageSource: "image-list", path: list), projectDirectory: repositoryDirectory)
        var mirrored = 0, kept = 0
        let size = 28 * 28 * 3
        let flipped = try flipping.loadBatch(indices, augmentationSeed: 9)
        for slot in indices {
            let image = Array(flipped.pixels[slot * size..<(slot + 1) * size]), original = Array(straight.imagePixels(at: slot))
            let mirror: [Float] = (0..<size).map { (index: Int) -> Float in
                let row = index / 28, column = index % 28
                return original[row * 28 + 27 - column]
            }
            if image == original { kept += 1 } else if image == mirror { mirrored += 1 } else { XCTFail("image \(slot) is neither itself nor its mirror") }
        }
        XCTAssertGreaterThan(mirrored, 0)
        XCTAssertGreaterThan(kept, 0)

        var random = SplitMix64(seed: 5)
        for _ in 0..<2000 {
            let window = ImageSetLoader.randomResizedCropWindow(width: 100, height: 80, random: &random)
            XCTAssertTrue(window.left >= 0 && window.top >= 0 && window.left + window.width <= 100 && window.top + window.height <= 80)
            let area = Double(window.width * window.height) / 8000, ratio = Double(window.width) / Double(window.height)
            XCTAssertTrue(area >= 0.07 && area <= 1 && ratio >= 0.72 && ratio <= 1.39, "\(window)")
        }
    }

    /// A folder of images without class subfolders is an unlabeled set (enough to calibrate).
    func testFolderWithoutSubfoldersIsUnlabeled() throws {
        let directory = try makeTemporaryDirectory(self)
        for index in 0..<3 { try writePNG(width: 8, height: 8, channels: 3, to: directory.appendingPathComponent("\(index).png")) }
        let images = try DatasetLoader.load(try DatasetSpec(imageSource: "image-folder", path: directory.path), projectDirectory: directory)
        XCTAssertFalse(images.isLabeled)
        XCTAssertEqual([images.count, images.channels, images.height, images.width], [3, 3, 8, 8])
    }

    /// Pillow's bilinear resize on a hand-checkable case: 4 → 2 averages pairs (antialiasing), 2 → 4 interpolates.
    func testResizeFollowsPillowsBilinearFilter() {
        let row = DecodedImage(width: 4, height: 1, channels: 1, samples: [0, 100, 200, 255])
        XCTAssertEqual(ImageResampling.resize(row, width: 2, height: 1).samples, [71, 209], "triangle of support 2 when halving (Pillow 12 gives 71, 209)")
        let pair = DecodedImage(width: 2, height: 1, channels: 1, samples: [0, 200])
        XCTAssertEqual(ImageResampling.resize(pair, width: 4, height: 1).samples, [0, 50, 150, 200])
        let block = DecodedImage(width: 7, height: 5, channels: 1, samples: (0..<35).map { UInt8($0 * 7 % 256) })
        XCTAssertEqual(ImageResampling.resize(block, width: 3, height: 4).samples, [18, 33, 48, 75, 90, 105, 133, 148, 163, 190, 205, 220], "both passes, as Pillow")
        XCTAssertTrue(ImageResampling.shorterSideSize(width: 500, height: 375, shorter: 256) == (341, 256))
    }

    private func writePNG(width: Int, height: Int, channels: Int, to url: URL) throws {
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? repositoryDirectory.appendingPathComponent(".venv/bin/python").path
        let mode = [1: "L", 3: "RGB", 4: "RGBA"][channels]!
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", "import numpy as np, sys; from PIL import Image; Image.fromarray((np.arange(\(width * height * channels)) % 251).astype(np.uint8).reshape(\(height), \(width)\(channels == 1 ? "" : ", \(channels)")), '\(mode)').save(sys.argv[1])", url.path]
        try process.run()
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0)
    }
}
