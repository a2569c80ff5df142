import Foundation

/// Unsigned-byte images decoded from an IDX3 file (`*-images-idx3-ubyte`), row-major, one byte per pixel.
public struct IDXImages: Sendable {
    public let count: Int
    public let rows: Int
    public let columns: Int
    /// `count × rows × columns` raw pixel values 0...255.
    public let pixels: [UInt8]
}

/// Reads the IDX format used by MNIST and Fashion-MNIST (big-endian header, then raw unsigned bytes), gzipped
/// or plain. Every structural problem becomes a `DatasetError.malformedFile` with the decompressed byte offset.
public enum IDXReader {
    /// Magic number of a 3-dimensional unsigned-byte IDX file (images).
    public static let imagesMagic: UInt32 = 0x0000_0803
    /// Magic number of a 1-dimensional unsigned-byte IDX file (labels).
    public static let labelsMagic: UInt32 = 0x0000_0801

    private static let imagesHeaderSize = 16  // magic + count + rows + columns
    private static let labelsHeaderSize = 8  // magic + count

    public static func readImages(_ url: URL) throws -> IDXImages {
        let file = try FileContents.read(url)
        var cursor = HeaderCursor(file: file)
        try cursor.expectMagic(imagesMagic, describing: "unsigned-byte images with 3 dimensions")
        let count = try cursor.readDimension("image count")
        let rows = try cursor.readDimension("rows per image")
        let columns = try cursor.readDimension("columns per image")
        guard rows > 0, columns > 0 else {
            throw DatasetError.malformedFile(
                path: file.path, byteOffset: 8,
                problem: "expected images of at least 1×1 pixels, header says \(rows)×\(columns)")
        }
        let (pixelCount, overflow) = count.multipliedReportingOverflow(by: rows * columns)
        guard !overflow else {
            throw DatasetError.malformedFile(
                path: file.path, byteOffset: 4,
                problem: "header dimensions \(count)×\(rows)×\(columns) are too large to be real")
        }
        try expectExactPayload(file, headerSize: imagesHeaderSize, payloadSize: pixelCount,
                               what: "\(count) images × \(rows) × \(columns) pixels")
        let pixels = Array(file.bytes[imagesHeaderSize...])
        return IDXImages(count: count, rows: rows, columns: columns, pixels: pixels)
    }

    /// Reads labels and checks each lies in `0..<classCount`.
    public static func readLabels(_ url: URL, classCount: Int = 10) throws -> [Int] {
        let file = try FileContents.read(url)
        var cursor = HeaderCursor(file: file)
        try cursor.expectMagic(labelsMagic, describing: "unsigned-byte labels with 1 dimension")
        let count = try cursor.readDimension("label count")
        try expectExactPayload(file, headerSize: labelsHeaderSize, payloadSize: count, what: "\(count) labels")
        var labels = [Int](repeating: 0, count: count)
        for index in 0..<count {
            let label = Int(file.bytes[labelsHeaderSize + index])
            guard label < classCount else {
                throw DatasetError.malformedFile(
                    path: file.path, byteOffset: labelsHeaderSize + index,
                    problem: "expected a class label in 0...\(classCount - 1), found \(label) (label #\(index))")
            }
            labels[index] = label
        }
        return labels
    }

    /// The payload must fill the file exactly: a short file is truncated, a long one is not what the header says.
    private static func expectExactPayload(_ file: FileContents, headerSize: Int, payloadSize: Int,
                                           what: String) throws {
        let available = file.bytes.count - headerSize
        if available < payloadSize {
            throw DatasetError.malformedFile(
                path: file.path, byteOffset: file.bytes.count,
                problem: "expected \(payloadSize) bytes of data (\(what)) from byte \(headerSize) to byte "
                    + "\(headerSize + payloadSize), but the data ends at byte \(file.bytes.count)"
                    + file.truncationHint)
        }
        if available > payloadSize {
            throw DatasetError.malformedFile(
                path: file.path, byteOffset: headerSize + payloadSize,
                problem: "expected end of data after \(what), found \(available - payloadSize) extra bytes")
        }
        if file.gzipStreamTruncated {
            // All the IDX data is there, but the gzip trailer (CRC32) is missing, so it is unverified.
            throw DatasetError.malformedFile(
                path: file.path, byteOffset: file.bytes.count,
                problem: "expected the gzip end-of-stream marker and CRC32 trailer after the data, "
                    + "but the compressed file ends early (truncated download?)")
        }
    }
}

/// Walks the big-endian header words of an IDX file, turning a short file into an offset-bearing error.
private struct HeaderCursor {
    let file: FileContents
    var offset = 0

    mutating func readWord(_ what: String) throws -> UInt32 {
        guard offset + 4 <= file.bytes.count else {
            throw DatasetError.malformedFile(
                path: file.path, byteOffset: file.bytes.count,
                problem: "expected a 4-byte \(what) at byte \(offset), but the data ends at byte "
                    + "\(file.bytes.count)" + file.truncationHint)
        }
        let bytes = file.bytes
        let word = UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16
            | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
        offset += 4
        return word
    }

    mutating func expectMagic(_ magic: UInt32, describing meaning: String) throws {
        let found = try readWord("IDX magic number")
        guard found == magic else {
            var problem = "expected IDX magic number \(hex(magic)) (\(meaning)), found \(hex(found))"
            if found == IDXReader.labelsMagic { problem += " (this is a label file)" }
            if found == IDXReader.imagesMagic { problem += " (this is an image file)" }
            if found >> 16 == 0x1f8b { problem += " (gzip data inside gzip? decompress once)" }
            throw DatasetError.malformedFile(path: file.path, byteOffset: 0, problem: problem)
        }
    }

    mutating func readDimension(_ what: String) throws -> Int {
        Int(try readWord(what))
    }

    private func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }
}
