import Foundation

/// The JSON form of a `Graph` in format 2, stored in `__metadata__["qatflow.graph"]`. It is compact because it is
/// a JSON string inside the safetensors header (every quote costs two bytes) and a QDQ graph has ~1,000 long names:
/// - every name is written once, in `names` (a front-coded `NameTable`), and referred to by index;
/// - a node is `[kind, name, [inputs], [outputs]]`, where `kinds` lists each distinct op + attributes once;
/// - values (`inputs`, `outputs`, listed `valueInfo`) are `[name, dtype, shape]`;
/// - `valueInfo` is `"inferred"` when it is exactly what shape inference computes (the reader recomputes it);
/// - initializers are listed by storage form (`InitializerForm`): `tensors` `[name, dtype, shape]` or
///   `[name, dtype, shape, bits]` (packed), held by the safetensors tensor named by the name's index in decimal;
///   `fills` `[dtype, shape, value, [names]]`; `products` `[name, vector, scalar]`.
/// Dtypes are safetensors' codes (F32, I8, U8, I32, I64). Attributes keep format 1's one-key objects.
struct CompactGraphDocument: Codable {
    /// One distinct op with its attributes: `["Conv", {"group": {"i": 1}, …}]`, or `["Relu"]` without attributes.
    struct Kind: Codable {
        var op: String
        var attributes: [String: GraphDocument.AttributeDocument]

        init(op: String, attributes: [String: GraphDocument.AttributeDocument]) {
            self.op = op
            self.attributes = attributes
        }

        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            op = try container.decode(String.self)
            attributes = container.isAtEnd ? [:] : try container.decode([String: GraphDocument.AttributeDocument].self)
            try container.expectEnd("[op] or [op, attributes]")
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(op)
            if !attributes.isEmpty { try container.encode(attributes) }
        }
    }

    /// `[kind, name, [inputs], [outputs]]`, all indices.
    struct NodeEntry: Codable {
        var kind: Int
        var name: Int
        var inputs: [Int]
        var outputs: [Int]

        init(kind: Int, name: Int, inputs: [Int], outputs: [Int]) {
            self.kind = kind
            self.name = name
            self.inputs = inputs
            self.outputs = outputs
        }

        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            kind = try container.decode(Int.self)
            name = try container.decode(Int.self)
            inputs = try container.decode([Int].self)
            outputs = try container.decode([Int].self)
            try container.expectEnd("[kind, name, [inputs], [outputs]]")
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(kind)
            try container.encode(name)
            try container.encode(inputs)
            try container.encode(outputs)
        }
    }

    /// `[name, dtype, shape]`: a graph input/output or an inferred value type.
    struct ValueEntry: Codable {
        var name: Int
        var dataType: DataType
        var shape: [Int]

        init(name: Int, dataType: DataType, shape: [Int]) {
            self.name = name
            self.dataType = dataType
            self.shape = shape
        }

        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            name = try container.decode(Int.self)
            dataType = try container.decode(DtypeCode.self).dataType
            shape = try container.decode([Int].self)
            try container.expectEnd("[name, dtype, shape]")
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(name)
            try container.encode(DtypeCode(dataType))
            try container.encode(shape)
        }
    }

    /// `[name, dtype, shape]` or `[name, dtype, shape, bits]`: an initializer held by a safetensors tensor.
    struct TensorEntry: Codable {
        var name: Int
        var dataType: DataType
        var shape: [Int]
        /// Packed to this many bits per value (the tensor is then U8), nil when stored as is.
        var bits: Int?

        init(name: Int, dataType: DataType, shape: [Int], bits: Int?) {
            self.name = name
            self.dataType = dataType
            self.shape = shape
            self.bits = bits
        }

        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            name = try container.decode(Int.self)
            dataType = try container.decode(DtypeCode.self).dataType
            shape = try container.decode([Int].self)
            bits = container.isAtEnd ? nil : try container.decode(Int.self)
            try container.expectEnd("[name, dtype, shape] or [name, dtype, shape, bits]")
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(name)
            try container.encode(DtypeCode(dataType))
            try container.encode(shape)
            if let bits { try container.encode(bits) }
        }
    }

    /// `[dtype, shape, value, [names]]`: initializers whose every element is `value`.
    struct FillEntry: Codable {
        var dataType: DataType
        var shape: [Int]
        var value: FillValue
        var names: [Int]

        init(dataType: DataType, shape: [Int], value: FillValue, names: [Int]) {
            self.dataType = dataType
            self.shape = shape
            self.value = value
            self.names = names
        }

        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            dataType = try container.decode(DtypeCode.self).dataType
            shape = try container.decode([Int].self)
            // Integers are read as integers (exact to 64 bits); Float32 values through Double.
            value = dataType == .float32 ? .real(try container.decode(Double.self)) : .integer(try container.decode(Int64.self))
            names = try container.decode([Int].self)
            try container.expectEnd("[dtype, shape, value, [names]]")
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(DtypeCode(dataType))
            try container.encode(shape)
            switch value {
            case .integer(let integer): try container.encode(integer)
            case .real(let real): try container.encode(real)
            }
            try container.encode(names)
        }
    }

    /// `[name, vector, scalar]`: a Float32 initializer equal to `vector[i] × scalar`, with the shape of `vector`.
    struct ProductEntry: Codable {
        var name: Int
        var vector: Int
        var scalar: Int

        init(name: Int, vector: Int, scalar: Int) {
            self.name = name
            self.vector = vector
            self.scalar = scalar
        }

        init(from decoder: Decoder) throws {
            var container = try decoder.unkeyedContainer()
            name = try container.decode(Int.self)
            vector = try container.decode(Int.self)
            scalar = try container.decode(Int.self)
            try container.expectEnd("[name, vector, scalar]")
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.unkeyedContainer()
            try container.encode(name)
            try container.encode(vector)
            try container.encode(scalar)
        }
    }

    /// `"inferred"` or a list of `[name, dtype, shape]`.
    enum ValueInfoEntry: Codable {
        case inferred
        case listed([ValueEntry])

        static let inferredMarker = "inferred"

        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let marker = try? container.decode(String.self) {
                guard marker == Self.inferredMarker else {
                    throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "expected \"inferred\" or a list of [name, dtype, shape], got \"\(marker)\""))
                }
                self = .inferred
            } else {
                self = .listed(try container.decode([ValueEntry].self))
            }
        }

        func encode(to encoder: Encoder) throws {
            var container = encoder.singleValueContainer()
            switch self {
            case .inferred: try container.encode(Self.inferredMarker)
            case .listed(let values): try container.encode(values)
            }
        }
    }

    var name: String
    var inputs: [ValueEntry]
    var outputs: [ValueEntry]
    var kinds: [Kind]
    var suffixes: [String]
    var names: [NameTable.Entry]
    var nodes: [NodeEntry]
    var tensors: [TensorEntry]
    var fills: [FillEntry]
    var products: [ProductEntry]
    var valueInfo: ValueInfoEntry
    var metadata: [String: String]

    /// The JSON text. Keys are written in a fixed order chosen for reading with `head -c` (the graph's shape
    /// first, the long lists later); nested objects have sorted keys, so equal graphs give equal bytes.
    func encoded() throws -> Data {
        let encoder = GraphDocument.encoder()
        let fields: [(String, Data)] = [
            ("name", try encoder.encode(name)),
            ("inputs", try encoder.encode(inputs)),
            ("outputs", try encoder.encode(outputs)),
            ("kinds", try encoder.encode(kinds)),
            ("suffixes", try encoder.encode(suffixes)),
            ("names", try encoder.encode(names)),
            ("nodes", try encoder.encode(nodes)),
            ("tensors", try encoder.encode(tensors)),
            ("fills", try encoder.encode(fills)),
            ("products", try encoder.encode(products)),
            ("valueInfo", try encoder.encode(valueInfo)),
            ("metadata", try encoder.encode(metadata)),
        ]
        var json = Data("{".utf8)
        for (position, (key, value)) in fields.enumerated() {
            if position > 0 { json.append(contentsOf: Array(",".utf8)) }
            json.append(contentsOf: Array("\"\(key)\":".utf8))
            json.append(value)
        }
        json.append(contentsOf: Array("}".utf8))
        return json
    }
}

/// A dtype written as its safetensors code.
struct DtypeCode: Codable {
    var dataType: DataType

    init(_ dataType: DataType) { self.dataType = dataType }

    init(from decoder: Decoder) throws {
        let code = try decoder.singleValueContainer().decode(String.self)
        guard let dataType = ModelFile.dataTypes[code] else {
            throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath,
                                                    debugDescription: "expected a dtype (\(ModelFile.dtypeNames.values.sorted().joined(separator: ", "))), got \"\(code)\""))
        }
        self.dataType = dataType
    }

    func encode(to encoder: Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(ModelFile.dtypeNames[dataType]!)
    }
}
