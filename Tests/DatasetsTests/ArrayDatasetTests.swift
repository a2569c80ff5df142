import Foundation
import XCTest
@testable import Datasets

/// ArrayDatasetReader on real files written by numpy (the project venv): np.savez (stored entries) and
/// np.savez_compressed (deflate), whose local headers carry ZIP64 extra fields even for tiny arrays.
final class ArrayDatasetTests: XCTestCase {
    /// The pixel formula both numpy and the test use: irregular enough that deflate needs real work.
    static func pixel(_ index: Int) -> UInt8 { UInt8((index * index * 31 + index * 7) % 251) }

    /// float32 values exactly representable, plus -0, infinity and the smallest subnormal.
    static func floatValue(_ index: Int) -> Float {
        switch index {
        case 0: return -0.0
        case 1: return .infinity
        case 2: return .leastNonzeroMagnitude
        default: return Float(index) * 0.25 - 7
        }
    }

    static let generator = #"""
    import io, sys, zipfile
    import numpy as np
    d = sys.argv[1]

    def pixels(shape):
        i = np.arange(int(np.prod(shape)), dtype=np.int64)
        return ((i * i * 31 + i * 7) % 251).astype(np.uint8).reshape(shape)

    gray = pixels((6, 5, 4))
    rgb = pixels((300, 32, 32, 3))  # 920 KB: many deflate blocks
    floats = (np.arange(6 * 3 * 4 * 5, dtype=np.float32) * np.float32(0.25) - np.float32(7)).reshape(6, 3, 4, 5)
    floats.flat[0] = -0.0
    floats.flat[1] = np.inf
    floats.flat[2] = np.nextafter(np.float32(0), np.float32(1))
    labels6 = np.array([0, 9, 3, 2**40, 1, 7], dtype=np.int64)
    labels300 = (np.arange(300) % 10).astype(np.uint8)

    for save in ('savez', 'savez_compressed'):
        write = getattr(np, save)
        write(f'{d}/gray_{save}.npz', images=gray, labels=labels6)
        write(f'{d}/rgb_{save}.npz', images=rgb, labels=labels300)
        write(f'{d}/floats_{save}.npz', images=floats, labels=labels6.astype(np.int32))
    np.savez(f'{d}/unlabeled.npz', images=gray)
    np.save(f'{d}/bare.npy', rgb[:7])
    for t in ['u1', 'i1', 'i2', 'u2', 'i4', 'u4', 'i8', 'u8']:
        np.savez(f'{d}/labels_{t}.npz', images=gray, labels=np.array([0, 1, 2, 3, 4, 127]).astype(t))

    # Files each reader error must explain.
    np.savez(f'{d}/positional.npz', gray, labels6)
    np.savez(f'{d}/float64.npz', images=gray.astype(np.float64), labels=labels6)
    np.savez(f'{d}/int32.npz', images=gray.astype(np.int32))
    np.savez(f'{d}/mismatch.npz', images=gray, labels=labels6[:4])
    np.savez(f'{d}/negative.npz', images=gray, labels=np.array([0, 1, -3, 0, 0, 0], dtype=np.int8))
    np.savez(f'{d}/huge.npz', images=gray, labels=np.array([0, 2**63 + 1, 0, 0, 0, 0], dtype=np.uint64))
    np.savez(f'{d}/fortran.npz', images=np.asfortranarray(pixels((6, 5, 4, 3))))
    np.savez(f'{d}/channels_first.npz', images=pixels((6, 3, 5, 6)))
    np.savez(f'{d}/floats_rank3.npz', images=gray.astype(np.float32))
    np.savez(f'{d}/labels_2d.npz', images=gray, labels=labels6.reshape(6, 1))
    npy = io.BytesIO()
    np.save(npy, gray)
    with zipfile.ZipFile(f'{d}/bzip2.npz', 'w', zipfile.ZIP_BZIP2) as z:
        z.writestr('images.npy', npy.getvalue())
    """#

    func runPython(_ arguments: [String]) throws { try runVenvPython(arguments) }

    /// Writes the generator's files into a fresh directory.
    func numpyFiles() throws -> URL {
        let directory = try makeTemporaryDirectory(self)
        try runPython(["-c", Self.generator, directory.path])
        return directory
    }

    func testSavezAndSavezCompressedReadBackExactly() throws {
        let directory = try numpyFiles()
        for save in ["savez", "savez_compressed"] {
            let gray = try ArrayDatasetReader.read(directory.appendingPathComponent("gray_\(save).npz"))
            guard case let .bytes(count, height, width, channels, samples) = gray.images else {
                return XCTFail("\(save): uint8 images must read as bytes")
            }
            XCTAssertEqual([count, height, width, channels], [6, 5, 4, 1], "N×H×W is one channel")
            XCTAssertEqual(samples, (0..<120).map(Self.pixel), save)
            XCTAssertEqual(gray.labels, [0, 9, 3, 1 << 40, 1, 7], "int64 labels, \(save)")
            XCTAssertEqual(gray.images.count, 6)

            let rgb = try ArrayDatasetReader.read(directory.appendingPathComponent("rgb_\(save).npz"))
            guard case let .bytes(count, height, width, channels, samples) = rgb.images else {
                return XCTFail("\(save): uint8 images must read as bytes")
            }
            XCTAssertEqual([count, height, width, channels], [300, 32, 32, 3])
            XCTAssertTrue(samples == (0..<300 * 32 * 32 * 3).map(Self.pixel), "N×H×W×3 pixels, \(save)")
            XCTAssertEqual(rgb.labels, (0..<300).map { $0 % 10 }, "uint8 labels, \(save)")

            let floats = try ArrayDatasetReader.read(directory.appendingPathComponent("floats_\(save).npz"))
            guard case let .floats(count, channels, height, width, values) = floats.images else {
                return XCTFail("\(save): float32 images must read as floats")
            }
            XCTAssertEqual([count, channels, height, width], [6, 3, 4, 5], "N×C×H×W")
            XCTAssertEqual(values.map(\.bitPattern), (0..<360).map { Self.floatValue($0).bitPattern }, save)
            XCTAssertEqual(floats.labels, [0, 9, 3, 0, 1, 7], "int32 labels (2**40 wraps to 0 in int32), \(save)")
        }

        let unlabeled = try ArrayDatasetReader.read(directory.appendingPathComponent("unlabeled.npz"))
        XCTAssertNil(unlabeled.labels)
        XCTAssertEqual(unlabeled.images.count, 6)

        let bare = try ArrayDatasetReader.read(directory.appendingPathComponent("bare.npy"))
        XCTAssertNil(bare.labels, "a .npy holds only images")
        guard case let .bytes(count, height, width, channels, samples) = bare.images else {
            return XCTFail("a uint8 .npy must read as bytes")
        }
        XCTAssertEqual([count, height, width, channels], [7, 32, 32, 3])
        XCTAssertEqual(samples, (0..<7 * 32 * 32 * 3).map(Self.pixel))

        for dtype in ["u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8"] {
            let dataset = try ArrayDatasetReader.read(directory.appendingPathComponent("labels_\(dtype).npz"))
            XCTAssertEqual(dataset.labels, [0, 1, 2, 3, 4, 127], "labels dtype \(dtype)")
        }
    }

    /// Each bad file is one error naming the file (and entry) and what was expected.
    func testBadFilesNameThePathAndTheProblem() throws {
        let directory = try numpyFiles()
        func url(_ name: String) -> URL { directory.appendingPathComponent(name) }
        func path(_ name: String) -> String { url(name).path }

        // Cut a compressed archive in half: its index (the end of the file) is gone.
        let whole = try [UInt8](Data(contentsOf: url("rgb_savez_compressed.npz")))
        try url("truncated.npz").write(bytes: Array(whole.prefix(whole.count / 2)))
        try url("text.npz").write(bytes: Array("images,labels\n1,2\n".utf8))
        try url("empty.npz").write(bytes: [])
        // Flip one pixel of a stored entry: only the CRC can notice.
        var corrupt = try [UInt8](Data(contentsOf: url("gray_savez.npz")))
        let magic = corrupt.firstRange(of: [0x93] + Array("NUMPY".utf8))!.lowerBound
        corrupt[magic + 200] ^= 0x55
        try url("corrupt.npz").write(bytes: corrupt)

        let cases: [(String, [String])] = [
            ("truncated.npz", [path("truncated.npz"), "end-of-central-directory", "truncated?"]),
            ("text.npz", [path("text.npz"), "at byte 0", "not a NumPy file", "\"images,l\""]),
            ("empty.npz", [path("empty.npz"), "the file is empty"]),
            ("missing.npz", [path("missing.npz"), "cannot read file"]),
            ("corrupt.npz", [path("corrupt.npz"), "entry 'images.npy'", "CRC-32 mismatch"]),
            ("bzip2.npz", [path("bzip2.npz"), "unknown compression method 12 (bzip2)", "0 (stored", "8 (deflate"]),
            ("positional.npz", [path("positional.npz"), "expected an array named 'images'", "found entries: arr_0.npy, arr_1.npy",
                                "np.savez(path, images=x, labels=y)"]),
            ("float64.npz", [path("float64.npz") + " (entry images.npy): at byte 10", "'<f8' (float64)", "'|u1'", "'<f4'",
                             "images.astype(np.float32)"]),
            ("int32.npz", [path("int32.npz") + " (entry images.npy)", "'<i4' (int32)", "images.astype(np.uint8)"]),
            ("mismatch.npz", [path("mismatch.npz"), "labels has 4 values but images has 6 images"]),
            ("negative.npz", [path("negative.npz") + " (entry labels.npy): at byte 130", "label -3 at index 2 is negative"]),
            ("huge.npz", [path("huge.npz") + " (entry labels.npy)", "label 9223372036854775809 at index 1 is too large"]),
            ("fortran.npz", [path("fortran.npz") + " (entry images.npy)", "fortran_order True", "np.ascontiguousarray"]),
            ("channels_first.npz", [path("channels_first.npz"), "shape (6, 3, 5, 6)", "C = 1, 3 or 4",
                                    "np.transpose(images, (0, 2, 3, 1))"]),
            ("floats_rank3.npz", [path("floats_rank3.npz"), "expected rank 4 (N×C×H×W", "images[:, None]"]),
            ("labels_2d.npz", [path("labels_2d.npz") + " (entry labels.npy)", "labels has shape (6, 1)", "labels.reshape(-1)"]),
        ]
        for (name, fragments) in cases {
            let message = errorDescription { _ = try ArrayDatasetReader.read(url(name)) }
            for fragment in fragments { XCTAssertTrue(message.contains(fragment), "\(name): «\(fragment)» in «\(message)»") }
            print("\(name) → \(message)")
        }
    }

    /// A ZIP64 archive as writers make it past 4 GB: central directory sizes and offsets of 0xFFFFFFFF with the
    /// real values in ZIP64 extra fields, and a ZIP64 end record. Built by hand (numpy only writes these for
    /// huge arrays); numpy reading the same bytes shows the hand-built archive is a valid one.
    func testZip64CentralDirectoryAndEndRecord() throws {
        let directory = try makeTemporaryDirectory(self)
        let images = Self.npy(descr: "|u1", shape: [2, 3, 2], data: (0..<12).map(Self.pixel))
        let labels = Self.npy(descr: "<u2", shape: [2], data: [5, 0, 1, 1])
        let url = directory.appendingPathComponent("zip64.npz")
        try url.write(bytes: Self.zip64Archive([("labels.npy", labels), ("images.npy", images)], comment: "hand-built ZIP64"))

        let dataset = try ArrayDatasetReader.read(url)
        guard case let .bytes(count, height, width, channels, samples) = dataset.images else {
            return XCTFail("uint8 images must read as bytes")
        }
        XCTAssertEqual([count, height, width, channels], [2, 3, 2, 1])
        XCTAssertEqual(samples, (0..<12).map(Self.pixel))
        XCTAssertEqual(dataset.labels, [5, 257])

        if (try? requireVenvPython()) != nil {
            try runPython(["-c", "import sys, numpy as np; z = np.load(sys.argv[1]); "
                + "assert z['images'].shape == (2, 3, 2) and list(z['labels']) == [5, 257]", url.path])
        }
    }

    /// A version 1.0 .npy file with numpy's 64-byte-aligned header.
    static func npy(descr: String, shape: [Int], data: [UInt8]) -> [UInt8] {
        let shapeText = ArrayDatasetReader.pythonTuple(shape)
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shapeText), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let length = header.utf8.count
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(length & 0xff), UInt8(length >> 8)] + Array(header.utf8) + data
    }

    /// Stored entries; every 32-bit size and offset field set to 0xFFFFFFFF, the real values in ZIP64 extras.
    static func zip64Archive(_ entries: [(name: String, data: [UInt8])], comment: String) -> [UInt8] {
        func le16(_ value: Int) -> [UInt8] { (0..<2).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        func le32(_ value: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        func le64(_ value: Int) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
        let all32 = 0xFFFF_FFFF
        var archive: [UInt8] = []
        var central: [UInt8] = []
        for (name, data) in entries {
            let offset = archive.count
            let crc = Int(StoredGzip.crc32(data))
            let nameBytes = Array(name.utf8)
            // Local header: as numpy writes it (sizes in a ZIP64 extra field).
            archive += le32(0x0403_4b50) + le16(45) + le16(0) + le16(0) + le16(0) + le16(0x21) + le32(crc)
            archive += le32(all32) + le32(all32) + le16(nameBytes.count) + le16(20) + nameBytes
            archive += le16(1) + le16(16) + le64(data.count) + le64(data.count) + data
            central += le32(0x0201_4b50) + le16(45) + le16(45) + le16(0) + le16(0) + le16(0) + le16(0x21) + le32(crc)
            central += le32(all32) + le32(all32) + le16(nameBytes.count) + le16(28) + le16(0) + le16(0) + le16(0)
            central += le32(0) + le32(all32) + nameBytes
            central += le16(1) + le16(24) + le64(data.count) + le64(data.count) + le64(offset)
        }
        let centralOffset = archive.count
        archive += central
        let zip64End = archive.count
        archive += le32(0x0606_4b50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0)
        archive += le64(entries.count) + le64(entries.count) + le64(central.count) + le64(centralOffset)
        archive += le32(0x0706_4b50) + le32(0) + le64(zip64End) + le32(1)
        archive += le32(0x0605_4b50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(all32) + le32(all32)
        archive += le16(comment.utf8.count) + Array(comment.utf8)
        return archive
    }
}
