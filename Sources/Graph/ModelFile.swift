import Foundation

/// The qatflow model file: a valid safetensors file whose tensors hold the graph's initializers and whose
/// `__metadata__` holds `format = qatflow`, `qatflow.version` and the graph itself as JSON (`qatflow.graph`).
/// Python's `safetensors` opens it; reading never executes anything; writing is atomic.
///
/// Format 2 (written): `CompactGraphDocument` — names written once, initializers stored as plain tensors, bit-packed
/// tensors, fills or products (`InitializerForm`). Format 1 (read only): `GraphDocument`, one plain tensor per
/// initializer under its own name; files of earlier qatflow versions (and caches holding them) still load.
public enum ModelFile {
    /// Version of the layout written; readers reject files of a newer version.
    public static let formatVersion = "2"
    /// Versions this reader understands.
    static let readableVersions = ["1", "2"]

    static let dtypeNames: [DataType: String] = [.float32: "F32", .int8: "I8", .uint8: "U8", .int32: "I32", .int64: "I64"]
    static let dataTypes = Dictionary(uniqueKeysWithValues: dtypeNames.map { ($1, $0) })

    /// The file's bytes.
    public static func encode(_ graph: Graph) throws -> Data {
        let (graphJSON, tensors) = try CompactGraphCoding.encode(graph)
        let container = SafetensorsContainer(
            metadata: [("format", "qatflow"), ("qatflow.version", formatVersion), ("qatflow.graph", String(decoding: graphJSON, as: UTF8.self))],
            tensors: tensors)
        return try container.encoded()
    }

    /// Writes atomically: a temporary file in the same directory, then `rename`, so a crash never leaves a
    /// half-written model under `url`.
    public static func write(_ graph: Graph, to url: URL) throws {
        let data = try encode(graph)
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        do {
            try data.write(to: temporary)
        } catch {
            throw ModelFileError(file: url.path, byteOffset: nil, "cannot write temporary file \(temporary.path): \(error.localizedDescription)")
        }
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ModelFileError(file: url.path, byteOffset: nil, "cannot move temporary file into place: \(reason)")
        }
    }

    public static func read(_ url: URL) throws -> Graph {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw ModelFileError(file: url.path, byteOffset: nil, "cannot read: \(error.localizedDescription)")
        }
        return try read(data: data, name: url.path)
    }

    /// Parses and validates a model file's bytes; `name` is used in error messages.
    public static func read(data: Data, name: String) throws -> Graph {
        let container = try SafetensorsContainer.decode(data, file: name)
        // The metadata lives in the JSON header, which starts at byte 8.
        func fail(_ message: String) -> ModelFileError { ModelFileError(file: name, byteOffset: 8, message) }
        guard container.metadata("format") == "qatflow" else {
            throw fail("expected __metadata__ \"format\": \"qatflow\" (a safetensors file without a qatflow graph?)")
        }
        guard let version = container.metadata("qatflow.version") else { throw fail("expected __metadata__ \"qatflow.version\"") }
        guard readableVersions.contains(version) else {
            if let number = Int(version), let newest = Int(formatVersion), number > newest {
                throw fail("qatflow.version \(version) is newer than this qatflow reads (format \(readableVersions.joined(separator: ", "))): "
                    + "the file was written by a newer qatflow; update qatflow to read it")
            }
            throw fail("qatflow.version \(version) is not a qatflow format version (expected one of \(readableVersions.joined(separator: ", ")))")
        }
        guard let graphJSON = container.metadata("qatflow.graph") else { throw fail("expected __metadata__ \"qatflow.graph\"") }
        let graph: Graph
        do {
            graph = version == "1"
                ? try readVersion1(graphJSON: Data(graphJSON.utf8), tensors: container.tensors)
                : try CompactGraphCoding.decode(graphJSON: Data(graphJSON.utf8), tensors: container.tensors)
        } catch let problem as FormatProblem {
            throw ModelFileError(file: name, byteOffset: problem.byteOffset ?? 8, problem.message)
        } catch let error as DecodingError {
            throw fail("qatflow.graph is not a valid graph: \(describe(error))")
        } catch let error as GraphValidationError {
            throw fail("qatflow.graph is not a valid graph: \(error)")
        } catch {
            throw fail("qatflow.graph is not valid JSON: \(error)")
        }
        return graph
    }

    /// Format 1: `GraphDocument`, every initializer a plain tensor it names.
    static func readVersion1(graphJSON: Data, tensors records: [SafetensorsContainer.TensorRecord]) throws -> Graph {
        let document = try GraphDocument.decoder().decode(GraphDocument.self, from: graphJSON)
        var nodes: [Node] = []
        for node in document.nodes {
            nodes.append(try makeNode(name: node.name, op: node.op, inputs: node.inputs, outputs: node.outputs, attributes: node.attributes))
        }
        let tensors = Dictionary(records.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var initializers: [String: Initializer] = [:]
        for reference in document.initializers {
            guard let tensor = tensors[reference.tensor] else {
                throw FormatProblem("initializer '\(reference.name)' refers to tensor '\(reference.tensor)', which the file does not contain")
            }
            guard initializers[reference.name] == nil else { throw FormatProblem("initializer '\(reference.name)' is listed twice") }
            initializers[reference.name] = Initializer(name: reference.name, shape: tensor.shape, storage: storage(tensor))
        }
        var valueInfo: [String: ValueInfo] = [:]
        for info in document.valueInfo { valueInfo[info.name] = info }
        let graph = Graph(name: document.name, inputs: document.inputs, outputs: document.outputs, nodes: nodes,
                          initializers: initializers, valueInfo: valueInfo, metadata: document.metadata)
        _ = try ShapeInference.infer(graph)
        return graph
    }

    /// A node from its JSON parts; throws for an unknown op or an attribute that is not exactly one kind.
    static func makeNode(name: String, op: String, inputs: [String], outputs: [String],
                         attributes documents: [String: GraphDocument.AttributeDocument]) throws -> Node {
        guard let opType = OpType(rawValue: op) else {
            throw FormatProblem("node '\(name)': unknown op '\(op)' (expected one of \(OpType.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        var attributes: [String: AttributeValue] = [:]
        for (key, attribute) in documents {
            guard let value = attribute.value else { throw FormatProblem("node '\(name)': attribute '\(key)' must have exactly one of i, f, ints, floats, s") }
            attributes[key] = value
        }
        return Node(name: name, op: opType, inputs: inputs, outputs: outputs, attributes: attributes)
    }

    // MARK: Bytes

    static func littleEndianBytes(_ storage: TensorStorage) -> Data {
        switch storage {
        case .float32(let values): return values.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Data($0) }
        case .int8(let values): return values.withUnsafeBytes { Data($0) }
        case .uint8(let values): return Data(values)
        case .int32(let values): return values.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        case .int64(let values): return values.map { $0.littleEndian }.withUnsafeBytes { Data($0) }
        }
    }

    /// The tensor's values; the container already checked that the byte count matches dtype and shape.
    static func storage(_ tensor: SafetensorsContainer.TensorRecord) -> TensorStorage {
        func load<T: FixedWidthInteger>(_: T.Type) -> [T] {
            tensor.bytes.withUnsafeBytes { raw in
                (0..<(raw.count / MemoryLayout<T>.size)).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
            }
        }
        switch tensor.dtype {
        case "F32": return .float32(load(UInt32.self).map(Float.init(bitPattern:)))
        case "I8": return .int8(load(Int8.self))
        case "U8": return .uint8(load(UInt8.self))
        case "I32": return .int32(load(Int32.self))
        default: return .int64(load(Int64.self))
        }
    }

    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let components = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return components.isEmpty ? "top level" : components
        }
        switch error {
        case .typeMismatch(let type, let context): return "\(path(context)): expected \(type) (\(context.debugDescription))"
        case .valueNotFound(let type, let context): return "\(path(context)): expected \(type), found null"
        case .keyNotFound(let key, let context): return "\(path(context)): missing key '\(key.stringValue)'"
        case .dataCorrupted(let context): return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }
}
