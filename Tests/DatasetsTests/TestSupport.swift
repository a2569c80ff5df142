import Foundation
import XCTest
@testable import Datasets

/// A fresh directory per test, removed afterwards.
func makeTemporaryDirectory(_ testCase: XCTestCase) throws -> URL {
    let url = FileManager.default.temporaryDirectory
        .appendingPathComponent("datasets-tests-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    testCase.addTeardownBlock { try? FileManager.default.removeItem(at: url) }
    return url
}

/// The repository root (three levels above this file), so tests also find a `datasets/` made by `make datasets`.
let repositoryDirectory = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Asserts `body` throws and returns the error's description (empty string when it did not throw).
func errorDescription(_ body: () throws -> Void, file: StaticString = #filePath, line: UInt = #line) -> String {
    do {
        try body()
        XCTFail("expected an error, none was thrown", file: file, line: line)
        return ""
    } catch let error as CustomStringConvertible {
        return error.description
    } catch {
        return "\(error)"
    }
}

/// Builds IDX files byte by byte, so tests control every header field.
enum IDXBytes {
    static func word(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8(value >> 16 & 0xff), UInt8(value >> 8 & 0xff), UInt8(value & 0xff)]
    }

    static func images(count: Int, rows: Int, columns: Int, pixel: (Int, Int, Int) -> UInt8) -> [UInt8] {
        var bytes = word(0x803) + word(UInt32(count)) + word(UInt32(rows)) + word(UInt32(columns))
        for image in 0..<count {
            for row in 0..<rows {
                for column in 0..<columns { bytes.append(pixel(image, row, column)) }
            }
        }
        return bytes
    }

    static func labels(_ labels: [UInt8]) -> [UInt8] {
        word(0x801) + word(UInt32(labels.count)) + labels
    }
}

/// Writes valid gzip files without any compression library: deflate "stored" blocks plus the CRC32/size
/// trailer. Truncating or corrupting them then exercises the real zlib decoder's failure paths.
enum StoredGzip {
    static func compress(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]
        var offset = 0
        repeat {
            let length = min(65_535, data.count - offset)
            let isFinal = offset + length == data.count
            out.append(isFinal ? 1 : 0)  // BFINAL bit, BTYPE 00 (stored)
            out += [UInt8(length & 0xff), UInt8(length >> 8), UInt8(~length & 0xff), UInt8((~length >> 8) & 0xff)]
            out += data[offset..<offset + length]
            offset += length
        } while offset < data.count
        out += littleEndian(crc32(data)) + littleEndian(UInt32(truncatingIfNeeded: data.count))
        return out
    }

    static func crc32(_ data: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xffff_ffff
        for byte in data {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0xedb8_8320 : crc >> 1 }
        }
        return ~crc
    }

    private static func littleEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value & 0xff), UInt8(value >> 8 & 0xff), UInt8(value >> 16 & 0xff), UInt8(value >> 24)]
    }
}

extension URL {
    func write(bytes: [UInt8]) throws { try Data(bytes).write(to: self) }
}

/// The venv's Python (QATFLOW_PYTHON overrides it). Without it the tests that write files with numpy or Pillow skip,
/// except under CI, where they fail.
func requireVenvPython() throws -> String {
    let path = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? repositoryDirectory.appendingPathComponent(".venv/bin/python").path
    if FileManager.default.isExecutableFile(atPath: path) { return path }
    let message = "no Python venv at \(path): run make venv"
    if ProcessInfo.processInfo.environment["CI"] != nil { throw DatasetError.invalidArgument(reason: message + " (CI: the venv is required)") }
    throw XCTSkip(message)
}

/// Runs the venv's Python with `arguments`; a non-zero exit throws with its stderr.
func runVenvPython(_ arguments: [String]) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try requireVenvPython())
    process.arguments = arguments
    let errors = Pipe()
    process.standardError = errors
    try process.run()
    let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw DatasetError.invalidArgument(reason: "python \(arguments.first ?? "") failed: \(stderr)")
    }
}
