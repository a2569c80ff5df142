import Foundation

/// The qatflow model file: a valid safetensors file whose tensors are the graph's initializers and whose
/// `__metadata__` holds `format = qatflow`, `qatflow.version` and the graph itself as JSON (`qatflow.graph`).
/// Python's `safetensors` opens it; reading never executes anything; writing is atomic.
public enum ModelFile {
    /// Version of the graph JSON layout; readers reject files of a newer version.
    public static let formatVersion = "1"

    static let dtypeNames: [DataType: String] = [.float32: "F32", .int8: "I8", .uint8: "U8", .int32: "I32", .int64: "I64"]

    /// The file's bytes.
    public static func encode(_ graph: Graph) throws -> Data {
        var tensors: [SafetensorsContainer.TensorRecord] = []
        var references: [GraphDocument.InitializerReference] = []
        for name in graph.initializers.keys.sorted() {
            let initializer = graph.initializers[name]!
            // "__metadata__" is reserved by safetensors; any other name is used as is.
            let tensorName = name == "__metadata__" ? "initializer.__metadata__" : name
            references.append(.init(name: name, tensor: tensorName))
            tensors.append(.init(name: tensorName, dtype: dtypeNames[initializer.storage.dataType]!, shape: initializer.shape,
                                 bytes: littleEndianBytes(initializer.storage)))
        }
        let document = GraphDocument(
            name: graph.name, inputs: graph.inputs, outputs: graph.outputs,
            nodes: graph.nodes.map { node in
                .init(name: node.name, op: node.op.rawValue, inputs: node.inputs, outputs: node.outputs,
                      attributes: node.attributes.mapValues(GraphDocument.AttributeDocument.init))
            },
            initializers: references,
            valueInfo: graph.valueInfo.keys.sorted().map { graph.valueInfo[$0]! },
            metadata: graph.metadata)
        let graphJSON = String(decoding: try GraphDocument.encoder().encode(document), as: UTF8.self)
        let container = SafetensorsContainer(
            metadata: ["format": "qatflow", "qatflow.version": formatVersion, "qatflow.graph": graphJSON],
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
        guard container.metadata["format"] == "qatflow" else {
            throw fail("expected __metadata__ \"format\": \"qatflow\" (a safetensors file without a qatflow graph?)")
        }
        guard let version = container.metadata["qatflow.version"] else { throw fail("expected __metadata__ \"qatflow.version\"") }
        guard version == formatVersion else { throw fail("qatflow.version \(version) is not supported (expected \(formatVersion))") }
        guard let graphJSON = container.metadata["qatflow.graph"] else { throw fail("expected __metadata__ \"qatflow.graph\"") }
        let document: GraphDocument
        do {
            document = try GraphDocument.decoder().decode(GraphDocument.self, from: Data(graphJSON.utf8))
        } catch let error as DecodingError {
            throw fail("qatflow.graph is not a valid graph: \(describe(error))")
        } catch {
            throw fail("qatflow.graph is not valid JSON: \(error)")
        }

        var nodes: [Node] = []
        for node in document.nodes {
            guard let op = OpType(rawValue: node.op) else {
                throw fail("node '\(node.name)': unknown op '\(node.op)' (expected one of \(OpType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            var attributes: [String: AttributeValue] = [:]
            for (key, attribute) in node.attributes {
                guard let value = attribute.value else { throw fail("node '\(node.name)': attribute '\(key)' must have exactly one of i, f, ints, floats, s") }
                attributes[key] = value
            }
            nodes.append(Node(name: node.name, op: op, inputs: node.inputs, outputs: node.outputs, attributes: attributes))
        }
        let tensors = Dictionary(container.tensors.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var initializers: [String: Initializer] = [:]
        for reference in document.initializers {
            guard let tensor = tensors[reference.tensor] else {
                throw fail("initializer '\(reference.name)' refers to tensor '\(reference.tensor)', which the file does not contain")
            }
            guard initializers[reference.name] == nil else { throw fail("initializer '\(reference.name)' is listed twice") }
            initializers[reference.name] = Initializer(name: reference.name, shape: tensor.shape, storage: storage(tensor))
        }
        var valueInfo: [String: ValueInfo] = [:]
        for info in document.valueInfo { valueInfo[info.name] = info }
        let graph = Graph(name: document.name, inputs: document.inputs, outputs: document.outputs, nodes: nodes,
                          initializers: initializers, valueInfo: valueInfo, metadata: document.metadata)
        do {
            _ = try ShapeInference.infer(graph)
        } catch let error as GraphValidationError {
            throw fail("qatflow.graph is not a valid graph: \(error)")
        }
        return graph
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
