import Foundation

/// Walks the protobuf wire format of an ONNX file before decoding it, to say *where* a file is broken.
///
/// swift-protobuf's `BinaryDecodingError` only says "truncated" or "malformed", with no position. A truncated
/// download or a half-written file is the common failure, and "file ends at byte N inside the graph field that
/// starts at byte M" tells the user what happened. The scan checks tags, varints and that every length-delimited
/// field fits inside its parent; it descends into the messages ONNX files are made of (model, graph, node,
/// attribute, tensor, value info) so corruption inside the graph is located too.
struct WireFormatScanner {
    struct Failure: Error {
        let offset: Int
        let message: String
    }

    /// The message types the scan descends into; field numbers are ONNX's (see Proto/onnx.proto).
    private enum MessageKind: String {
        case model = "ModelProto", graph = "GraphProto", node = "NodeProto", attribute = "AttributeProto"
        case tensor = "TensorProto", valueInfo = "ValueInfoProto", type = "TypeProto"
        case tensorType = "TypeProto.Tensor", shape = "TensorShapeProto"

        func child(ofField field: UInt64) -> (name: String, kind: MessageKind?)? {
            switch (self, field) {
            case (.model, 7): return ("graph", .graph)
            case (.model, 8): return ("opset_import", nil)
            case (.model, 14): return ("metadata_props", nil)
            case (.graph, 1): return ("node", .node)
            case (.graph, 5): return ("initializer", .tensor)
            case (.graph, 11): return ("input", .valueInfo)
            case (.graph, 12): return ("output", .valueInfo)
            case (.graph, 13): return ("value_info", .valueInfo)
            case (.node, 5): return ("attribute", .attribute)
            case (.attribute, 5): return ("t", .tensor)
            case (.attribute, 6): return ("g", .graph)
            case (.attribute, 10): return ("tensors", .tensor)
            case (.attribute, 11): return ("graphs", .graph)
            case (.valueInfo, 2): return ("type", .type)
            case (.type, 1): return ("tensor_type", .tensorType)
            case (.tensorType, 2): return ("shape", .shape)
            case (.tensor, 9): return ("raw_data", nil)
            default: return nil
            }
        }
    }

    private let bytes: [UInt8]

    init(_ data: Data) {
        bytes = [UInt8](data)
    }

    /// Throws `Failure` at the first malformed spot of a serialized `ModelProto`.
    func scanModel() throws {
        if bytes.isEmpty {
            throw Failure(offset: 0, message: "the file is empty")
        }
        try scan(kind: .model, from: 0, to: bytes.count, depth: 0)
    }

    private func scan(kind: MessageKind, from start: Int, to end: Int, depth: Int) throws {
        // ONNX nests graphs only inside control-flow attributes; a deep nesting is corruption, not a model.
        guard depth < 64 else { throw Failure(offset: start, message: "messages nested more than 64 deep") }
        var offset = start
        while offset < end {
            let tagOffset = offset
            let tag = try readVarint(&offset, limit: end, what: "field tag in \(kind.rawValue)")
            let fieldNumber = tag >> 3
            let wireType = tag & 7
            guard fieldNumber != 0 else {
                throw Failure(offset: tagOffset, message: "invalid field number 0 in \(kind.rawValue) (tag \(tag))")
            }
            let field = kind.child(ofField: fieldNumber)
            let fieldName = field.map { "field \(fieldNumber) (\($0.name))" } ?? "field \(fieldNumber)"
            switch wireType {
            case 0:
                _ = try readVarint(&offset, limit: end, what: "value of \(fieldName) in \(kind.rawValue)")
            case 1, 5:
                let size = wireType == 1 ? 8 : 4
                guard offset + size <= end else {
                    throw Failure(offset: tagOffset, message: "\(size)-byte \(fieldName) of \(kind.rawValue) starting at byte \(tagOffset) runs past \(endDescription(end)) (file truncated?)")
                }
                offset += size
            case 2:
                let length = try readVarint(&offset, limit: end, what: "length of \(fieldName) in \(kind.rawValue)")
                guard length <= UInt64(end - offset) else {
                    throw Failure(offset: tagOffset, message: "\(fieldName) of \(kind.rawValue) starting at byte \(tagOffset) declares \(length) bytes but only \(end - offset) remain before \(endDescription(end)) (file truncated?)")
                }
                let fieldEnd = offset + Int(length)
                if let child = field?.kind {
                    try scan(kind: child, from: offset, to: fieldEnd, depth: depth + 1)
                }
                offset = fieldEnd
            default:
                throw Failure(offset: tagOffset, message: "invalid wire type \(wireType) for \(fieldName) in \(kind.rawValue) (not an ONNX file, or corrupt)")
            }
        }
    }

    private func endDescription(_ end: Int) -> String {
        end == bytes.count ? "the end of the file (byte \(end))" : "the end of the enclosing message (byte \(end))"
    }

    private func readVarint(_ offset: inout Int, limit: Int, what: String) throws -> UInt64 {
        let start = offset
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard offset < limit else {
                let place = limit == bytes.count ? "the end of the file (byte \(limit))" : "byte \(limit)"
                throw Failure(offset: start, message: "\(what) starting at byte \(start) runs past \(place) (file truncated?)")
            }
            let byte = bytes[offset]
            offset += 1
            guard shift < 64 else {
                throw Failure(offset: start, message: "\(what) at byte \(start) is longer than 10 bytes (corrupt)")
            }
            value |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return value }
            shift += 7
        }
    }
}
