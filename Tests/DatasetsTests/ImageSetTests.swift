import Foundation
import XCTest
@testable import Datasets

/// image-folder and image-list datasets on real files written by Pillow, decoded by libpng and libjpeg-turbo.
final class ImageSetTests: XCTestCase {
    static let images = 300

    /// Writes Fashion-MNIST test images with Tests/DatasetsTests/Scripts/write_images.py (the venv's Pillow).
    func writeImages(_ mode: String, into directory: URL) throws {
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? repositoryDirectory.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else { throw XCTSkip("no Python venv at \(python): run make venv") }
        let spec = try DatasetSpec(shorthand: "fashion-mnist:test")
        let idx = try DatasetLoader.locateFiles(for: spec, projectDirectory: repositoryDirectory).images.deletingLastPathComponent()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [repositoryDirectory.appendingPathComponent("Tests/DatasetsTests/Scripts/write_images.py").path,
                             mode, idx.path, directory.path, String(Self.images)]
        let errors = Pipe()
        process.standardError = errors
        try process.run()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw DatasetError.invalidArgument(reason: "write_images.py \(mode) failed: \(stderr)") }
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
