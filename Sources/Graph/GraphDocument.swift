import Foundation

/// Format 1 of the JSON form of a `Graph` in the model file's `__metadata__["qatflow.graph"]`, kept so that files
/// written before format 2 (`CompactGraphDocument`) still load; nothing writes it any more. Weights are not in it:
/// each initializer names the safetensors tensor that holds its data. Its `AttributeDocument` is format 2's too.
///
/// Attributes get an explicit one-key form (`{"i": 3}`, `{"f": 0.5}`, `{"ints": […]}`, `{"floats": […]}`,
/// `{"s": "…"}`) so the JSON is readable by other tools; floats that JSON cannot spell are written as the strings
/// "inf", "-inf" and "nan".
struct GraphDocument: Codable {
    struct AttributeDocument: Codable {
        var i: Int?
        var f: Float?
        var ints: [Int]?
        var floats: [Float]?
        var s: String?

        init(_ value: AttributeValue) {
            switch value {
            case .int(let v): i = v
            case .float(let v): f = v
            case .ints(let v): ints = v
            case .floats(let v): floats = v
            case .string(let v): s = v
            }
        }

        var value: AttributeValue? {
            let present = [i != nil, f != nil, ints != nil, floats != nil, s != nil].filter { $0 }.count
            guard present == 1 else { return nil }
            if let i { return .int(i) }
            if let f { return .float(f) }
            if let ints { return .ints(ints) }
            if let floats { return .floats(floats) }
            return s.map { .string($0) }
        }
    }

    struct NodeDocument: Codable {
        var name: String
        var op: String
        var inputs: [String]
        var outputs: [String]
        var attributes: [String: AttributeDocument]
    }

    struct InitializerReference: Codable {
        var name: String
        var tensor: String
    }

    var name: String
    var inputs: [ValueInfo]
    var outputs: [ValueInfo]
    var nodes: [NodeDocument]
    var initializers: [InitializerReference]
    var valueInfo: [ValueInfo]
    var metadata: [String: String]

    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return decoder
    }
}
