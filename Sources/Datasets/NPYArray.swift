import Foundation

/// Reads and writes NumPy `.npy` files holding little-endian float32 (`<f4`), C-order arrays: the format the
/// project uses to exchange tensors with the Python cross-checks. Header versions 1.0 (16-bit header length)
/// and 2.0/3.0 (32-bit) are read; 1.0 is written unless the header is too long for it.
public enum NPYArray {
    static let magic: [UInt8] = [0x93] + Array("NUMPY".utf8)
    /// numpy pads headers so the data starts on a 64-byte boundary (aligned for memory mapping).
    static let dataAlignment = 64

    public static func read(_ url: URL) throws -> (shape: [Int], values: [Float]) {
        let path = url.path
        let bytes: [UInt8]
        do {
            bytes = [UInt8](try Data(contentsOf: url))
        } catch {
            throw DatasetError.unreadableFile(path: path, reason: error.localizedDescription)
        }
        func fail(_ offset: Int, _ problem: String) -> DatasetError {
            .malformedFile(path: path, byteOffset: offset, problem: problem)
        }

        guard bytes.count >= 10 else {
            throw fail(bytes.count, "expected at least 10 bytes (NPY magic, version, header length), "
                + "file has \(bytes.count)")
        }
        guard Array(bytes[0..<6]) == magic else {
            throw fail(0, "expected NPY magic \\x93NUMPY, found \(bytes[0..<6].map { String(format: "%02x", $0) }.joined(separator: " "))")
        }
        let major = Int(bytes[6])
        let headerLength: Int
        let headerStart: Int
        switch major {
        case 1:
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else {
                throw fail(bytes.count, "expected a 4-byte header length at byte 8, file ends at byte \(bytes.count)")
            }
            headerLength = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            headerStart = 12
        default:
            throw fail(6, "expected NPY format version 1.x, 2.x or 3.x, found \(major).\(bytes[7])")
        }
        let dataStart = headerStart + headerLength
        guard dataStart <= bytes.count else {
            throw fail(bytes.count, "expected a \(headerLength)-byte header from byte \(headerStart) to \(dataStart), "
                + "file ends at byte \(bytes.count) (truncated?)")
        }
        guard let header = String(bytes: bytes[headerStart..<dataStart], encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw fail(headerStart, "expected a text header dictionary, found undecodable bytes")
        }
        let fields = try NPYHeader(parsing: header, path: path, offset: headerStart)

        guard fields.descr == "<f4" || (fields.descr == "|f4") else {
            throw fail(headerStart, "unsupported dtype '\(fields.descr)': expected '<f4' (little-endian float32)"
                + (fields.descr == "<f8" ? "; this file holds float64, convert it with .astype(np.float32)" : ""))
        }
        guard !fields.fortranOrder else {
            throw fail(headerStart, "unsupported fortran_order True: expected a C-order array "
                + "(save np.ascontiguousarray(a) instead)")
        }
        var elementCount = 1
        for dimension in fields.shape {
            let (product, overflow) = elementCount.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw fail(headerStart, "shape \(fields.shape) is too large to be real") }
            elementCount = product
        }
        let dataSize = elementCount * 4
        guard bytes.count - dataStart >= dataSize else {
            throw fail(bytes.count, "expected \(dataSize) bytes of float32 data (shape \(fields.shape)) from byte "
                + "\(dataStart) to \(dataStart + dataSize), but the file ends at byte \(bytes.count) (truncated?)")
        }
        guard bytes.count - dataStart == dataSize else {
            throw fail(dataStart + dataSize, "expected end of file after \(elementCount) float32 values, "
                + "found \(bytes.count - dataStart - dataSize) extra bytes")
        }
        let values = [Float](unsafeUninitializedCapacity: elementCount) { output, initializedCount in
            bytes.withUnsafeBytes { raw in
                for index in 0..<elementCount {
                    let bits = raw.loadUnaligned(fromByteOffset: dataStart + index * 4, as: UInt32.self)
                    output[index] = Float(bitPattern: UInt32(littleEndian: bits))
                }
            }
            initializedCount = elementCount
        }
        return (fields.shape, values)
    }

    /// Writes atomically: the file appears complete at `url` or not at all (temp file in the same directory, then
    /// rename, which is atomic within one file system), so a crashed stage never leaves half an array behind.
    public static func write(shape: [Int], values: [Float], to url: URL) throws {
        guard shape.allSatisfy({ $0 >= 0 }) else {
            throw DatasetError.invalidArgument(reason: "NPY shape \(shape) has a negative dimension")
        }
        let expectedCount = shape.reduce(1, *)
        guard expectedCount == values.count else {
            throw DatasetError.invalidArgument(
                reason: "NPY shape \(shape) needs \(expectedCount) values, got \(values.count) (writing \(url.path))")
        }
        var file = header(shape: shape)
        file.reserveCapacity(file.count + values.count * 4)
        if 1.littleEndian == 1 {
            values.withUnsafeBytes { file.append(contentsOf: $0) }  // memory already is the file's byte order
        } else {
            for value in values {
                withUnsafeBytes(of: value.bitPattern.littleEndian) { file.append(contentsOf: $0) }
            }
        }

        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        do {
            try Data(file).write(to: temporary)
        } catch {
            throw DatasetError.unwritableFile(path: temporary.path, reason: error.localizedDescription)
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw DatasetError.unwritableFile(path: url.path, reason: "cannot move the finished file into place: \(reason)")
        }
    }

    /// Magic, version, length and the padded header dictionary numpy itself would write.
    static func header(shape: [Int]) -> [UInt8] {
        let shapeText = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        let dictionary = "{'descr': '<f4', 'fortran_order': False, 'shape': \(shapeText), }"
        for (version, lengthSize) in [(UInt8(1), 2), (UInt8(2), 4)] {
            let prefixSize = magic.count + 2 + lengthSize
            let unpadded = prefixSize + dictionary.utf8.count + 1  // + terminating newline
            let padding = (dataAlignment - unpadded % dataAlignment) % dataAlignment
            let headerLength = dictionary.utf8.count + padding + 1
            if lengthSize == 2 && headerLength > Int(UInt16.max) { continue }
            var bytes = magic + [version, 0]
            for byteIndex in 0..<lengthSize { bytes.append(UInt8(truncatingIfNeeded: headerLength >> (8 * byteIndex))) }
            bytes += Array(dictionary.utf8) + Array(repeating: UInt8(ascii: " "), count: padding) + [UInt8(ascii: "\n")]
            return bytes
        }
        fatalError("unreachable: a version 2.0 header length always fits 32 bits for any realistic shape")
    }
}
