import Datasets
import Foundation
import XCTest

final class NPYArrayTests: XCTestCase {
    func testRoundTripKeepsShapeAndExactValues() throws {
        let directory = try makeTemporaryDirectory(self)
        let cases: [([Int], [Float])] = [
            ([2, 3, 4], (0..<24).map { Float($0) * 0.37 - 3 }),
            ([5], [1, -0, .infinity, -.greatestFiniteMagnitude, .leastNonzeroMagnitude]),
            ([], [42.5]),
            ([0, 3], []),
        ]
        for (shape, values) in cases {
            let url = directory.appendingPathComponent("array.npy")
            try NPYArray.write(shape: shape, values: values, to: url)  // overwrites the previous case
            let read = try NPYArray.read(url)
            XCTAssertEqual(read.shape, shape)
            XCTAssertEqual(read.values.map(\.bitPattern), values.map(\.bitPattern), "shape \(shape)")
            let bytes = try [UInt8](Data(contentsOf: url))
            let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            XCTAssertEqual((10 + headerLength) % 64, 0, "numpy aligns the data to 64 bytes")
            XCTAssertEqual(bytes.count, 10 + headerLength + values.count * 4)
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        XCTAssertEqual(leftovers, ["array.npy"], "the atomic write must leave no temporary file behind")
    }

    func testWriteRejectsMismatchedValueCount() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("bad.npy")
        let message = errorDescription { try NPYArray.write(shape: [2, 2], values: [1, 2, 3], to: url) }
        XCTAssertTrue(message.contains("needs 4 values, got 3"), message)
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }

    func testWriteIntoMissingDirectoryIsAnError() {
        let url = URL(fileURLWithPath: "/nonexistent-\(UUID().uuidString)/a.npy")
        let message = errorDescription { try NPYArray.write(shape: [1], values: [1], to: url) }
        XCTAssertTrue(message.contains("cannot write"), message)
    }

    func testReadsVersion2HeaderAndSpacingVariants() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("v2.npy")
        try url.write(bytes: npyFile(
            version: 2, header: #"{"shape": (2L,), "fortran_order": False, "descr": "<f4"}"#, data: [0, 0, 0x80, 0x3f] + [0, 0, 0, 0x40]))
        let read = try NPYArray.read(url)
        XCTAssertEqual(read.shape, [2])
        XCTAssertEqual(read.values, [1, 2])
    }

    func testFloat64IsRejectedNamingTheDtype() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("double.npy")
        try url.write(bytes: npyFile(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
                                     data: [UInt8](repeating: 0, count: 16)))
        let message = errorDescription { _ = try NPYArray.read(url) }
        XCTAssertTrue(message.contains("double.npy: at byte 10"), message)
        XCTAssertTrue(message.contains("unsupported dtype '<f8'") && message.contains("'<f4'"), message)
    }

    func testFortranOrderIsRejected() throws {
        let url = try makeTemporaryDirectory(self).appendingPathComponent("fortran.npy")
        try url.write(bytes: npyFile(header: "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }",
                                     data: [0, 0, 0, 0]))
        let message = errorDescription { _ = try NPYArray.read(url) }
        XCTAssertTrue(message.contains("fortran.npy") && message.contains("fortran_order True"), message)
    }

    func testBadMagicAndTruncationGiveOffsets() throws {
        let directory = try makeTemporaryDirectory(self)
        let notNPY = directory.appendingPathComponent("text.npy")
        try notNPY.write(bytes: Array("just some text, not numpy".utf8))
        let magicMessage = errorDescription { _ = try NPYArray.read(notNPY) }
        XCTAssertTrue(magicMessage.contains("text.npy: at byte 0") && magicMessage.contains("magic"), magicMessage)

        let good = directory.appendingPathComponent("good.npy")
        try NPYArray.write(shape: [4], values: [1, 2, 3, 4], to: good)
        let bytes = try [UInt8](Data(contentsOf: good))
        let truncated = directory.appendingPathComponent("truncated.npy")
        try truncated.write(bytes: Array(bytes.dropLast(3)))
        let message = errorDescription { _ = try NPYArray.read(truncated) }
        XCTAssertTrue(message.contains("truncated.npy: at byte \(bytes.count - 3)"), message)
        XCTAssertTrue(message.contains("expected 16 bytes of float32 data"), message)

        let malformed = directory.appendingPathComponent("malformed.npy")
        try malformed.write(bytes: npyFile(header: "{'descr': '<f4', 'fortran_order': False, 'shape': [2], }",
                                           data: []))
        let headerMessage = errorDescription { _ = try NPYArray.read(malformed) }
        XCTAssertTrue(headerMessage.contains("malformed.npy: at byte 60") && headerMessage.contains("expected '('"),
                      headerMessage)
    }

    /// An NPY file assembled by hand, as numpy would (or would not) write it.
    private func npyFile(version: UInt8 = 1, header: String, data: [UInt8]) -> [UInt8] {
        let text = Array((header + "\n").utf8)
        var bytes: [UInt8] = [0x93] + Array("NUMPY".utf8) + [version, 0]
        let length = text.count
        bytes += version == 1 ? [UInt8(length & 0xff), UInt8(length >> 8)]
            : [UInt8(length & 0xff), UInt8(length >> 8 & 0xff), UInt8(length >> 16 & 0xff), UInt8(length >> 24)]
        return bytes + text + data
    }
}
