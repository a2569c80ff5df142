import Foundation

/// The safetensors container: `u64 little-endian header length`, a JSON header (padded with spaces to 8 bytes)
/// mapping tensor names to `{dtype, shape, data_offsets}` plus an optional `__metadata__` string map, then the raw
/// little-endian tensor bytes. Tensors are laid out back to back in the order given, as the reference
/// implementation expects (no holes, no overlap).
struct SafetensorsContainer {
    struct TensorRecord: Equatable {
        var name: String
        var dtype: String
        var shape: [Int]
        var bytes: Data
        /// Where the tensor's data starts in the file (set when decoding; error messages name it).
        var fileOffset = 0
    }

    /// Written first and in this order, so that `head -c` shows it before the tensor table.
    var metadata: [(key: String, value: String)]
    var tensors: [TensorRecord]

    /// Bytes per element of each supported dtype.
    static let elementSizes: [String: Int] = ["F32": 4, "I8": 1, "U8": 1, "I32": 4, "I64": 8]

    func metadata(_ key: String) -> String? { metadata.first { $0.key == key }?.value }

    // MARK: Encoding

    /// The header is written by hand (not as one serialized dictionary) to control its order: `__metadata__`
    /// first, then the tensors in data order.
    func encoded() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        func json(_ string: String) throws -> String { String(decoding: try encoder.encode(string), as: UTF8.self) }
        var members: [String] = []
        if !metadata.isEmpty {
            let pairs = try metadata.map { "\(try json($0.key)):\(try json($0.value))" }
            members.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in tensors {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            members.append("\(try json(tensor.name)):{\"dtype\":\(try json(tensor.dtype)),\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + tensor.bytes.count)]}")
            offset += tensor.bytes.count
        }
        var headerBytes = Data("{\(members.joined(separator: ","))}".utf8)
        // Pad with spaces so that the tensor data starts 8-byte aligned (what the reference writer does).
        let padding = (8 - (8 + headerBytes.count) % 8) % 8
        headerBytes.append(contentsOf: [UInt8](repeating: 0x20, count: padding))
        var file = Data(capacity: 8 + headerBytes.count + offset)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(headerBytes)
        for tensor in tensors { file.append(tensor.bytes) }
        return file
    }

    // MARK: Decoding

    /// Parses and validates the container; every failure is a `ModelFileError` with the offending byte offset.
    static func decode(_ data: Data, file: String) throws -> SafetensorsContainer {
        func fail(_ offset: Int?, _ message: String) -> ModelFileError { ModelFileError(file: file, byteOffset: offset, message) }
        guard data.count >= 8 else {
            throw fail(0, "expected an 8-byte little-endian header length, but the file has only \(data.count) bytes")
        }
        let headerLength = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) }
        guard headerLength >= 2, headerLength <= UInt64(data.count - 8) else {
            throw fail(0, "header length \(headerLength) does not fit the file (expected 2…\(data.count - 8) bytes after the 8-byte length)")
        }
        let headerEnd = 8 + Int(headerLength)
        let headerBytes = data.subdata(in: (data.startIndex + 8)..<(data.startIndex + headerEnd))
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw fail(8, "expected a JSON object as header (\(headerLength) bytes): \(error.localizedDescription)")
        }
        guard let header = parsed as? [String: Any] else { throw fail(8, "expected the header to be a JSON object") }

        var metadata: [(key: String, value: String)] = []
        if let rawMetadata = header["__metadata__"] {
            guard let map = rawMetadata as? [String: Any], let strings = map as? [String: String] else {
                throw fail(8, "expected __metadata__ to map strings to strings")
            }
            metadata = strings.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
        let bufferSize = data.count - headerEnd
        var entries: [(name: String, dtype: String, shape: [Int], begin: Int, end: Int, elements: Int, elementSize: Int)] = []
        // Names in order and data checked in file order, so that the error reported is always the first one.
        for (name, value) in header.sorted(by: { $0.key < $1.key }) where name != "__metadata__" {
            guard let entry = value as? [String: Any] else { throw fail(8, "tensor '\(name)': expected an object with dtype, shape, data_offsets") }
            guard let dtype = entry["dtype"] as? String, let elementSize = elementSizes[dtype] else {
                throw fail(8, "tensor '\(name)': expected dtype one of \(elementSizes.keys.sorted()), got \(entry["dtype"] ?? "nothing")")
            }
            guard let shape = integers(entry["shape"]), shape.allSatisfy({ $0 >= 0 }) else {
                throw fail(8, "tensor '\(name)': expected shape as a list of non-negative integers, got \(entry["shape"] ?? "nothing")")
            }
            guard let offsets = integers(entry["data_offsets"]), offsets.count == 2 else {
                throw fail(8, "tensor '\(name)': expected data_offsets [begin, end], got \(entry["data_offsets"] ?? "nothing")")
            }
            var elements = 1
            for dimension in shape {
                let (product, overflow) = elements.multipliedReportingOverflow(by: dimension)
                guard !overflow else { throw fail(8, "tensor '\(name)': shape \(shape) is too large") }
                elements = product
            }
            entries.append((name, dtype, shape, offsets[0], offsets[1], elements, elementSize))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        for entry in entries {
            let (name, begin, end) = (entry.name, entry.begin, entry.end)
            guard begin >= 0, begin <= end, end <= bufferSize else {
                throw fail(headerEnd + max(begin, 0), "tensor '\(name)': data_offsets [\(begin), \(end)] out of range (expected 0 ≤ begin ≤ end ≤ \(bufferSize))")
            }
            let (expectedBytes, overflow) = entry.elements.multipliedReportingOverflow(by: entry.elementSize)
            guard !overflow, expectedBytes == end - begin else {
                throw fail(headerEnd + begin, "tensor '\(name)': \(entry.dtype) \(entry.shape) needs \(entry.elements) × \(entry.elementSize) bytes but data_offsets span \(end - begin)")
            }
        }
        var expectedBegin = 0
        for entry in entries {
            guard entry.begin >= expectedBegin else {
                throw fail(headerEnd + entry.begin, "tensor '\(entry.name)' overlaps the previous tensor (expected data to start at or after \(expectedBegin))")
            }
            guard entry.begin == expectedBegin else {
                throw fail(headerEnd + expectedBegin, "unused bytes before tensor '\(entry.name)' (expected tensors back to back)")
            }
            expectedBegin = entry.end
        }
        guard expectedBegin == bufferSize else {
            throw fail(headerEnd + expectedBegin, "expected end of file after the last tensor, found \(bufferSize - expectedBegin) more bytes")
        }
        let tensors = entries.map { entry in
            TensorRecord(name: entry.name, dtype: entry.dtype, shape: entry.shape,
                         bytes: data.subdata(in: (data.startIndex + headerEnd + entry.begin)..<(data.startIndex + headerEnd + entry.end)),
                         fileOffset: headerEnd + entry.begin)
        }
        return SafetensorsContainer(metadata: metadata, tensors: tensors)
    }

    /// A JSON array of integers (rejects fractions, booleans and strings).
    private static func integers(_ value: Any?) -> [Int]? {
        guard let array = value as? [Any] else { return nil }
        var result: [Int] = []
        for element in array {
            // Booleans bridge to NSNumber too; their Objective-C type code is "c".
            guard let number = element as? NSNumber, String(cString: number.objCType) != "c",
                  let integer = element as? Int else { return nil }
            result.append(integer)
        }
        return result
    }
}
