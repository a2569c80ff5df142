import Foundation

/// Graph ⇄ format 2 (`CompactGraphDocument` + the safetensors tensors it refers to).
enum CompactGraphCoding {
    typealias TensorRecord = SafetensorsContainer.TensorRecord
    typealias Document = CompactGraphDocument

    // MARK: Writing

    static func encode(_ graph: Graph) throws -> (graphJSON: Data, tensors: [TensorRecord]) {
        // Stored only when it is not what the reader would infer (e.g. a graph that was never validated).
        let valueInfoIsInferred = (try? graph.validated())?.valueInfo == graph.valueInfo
        var strings = graph.inputs.map(\.name) + graph.outputs.map(\.name) + graph.initializers.keys
        for node in graph.nodes { strings += [node.name] + node.inputs + node.outputs }
        if !valueInfoIsInferred { strings += graph.valueInfo.keys }
        let table = NameTable(strings)
        func value(_ info: ValueInfo) -> Document.ValueEntry {
            .init(name: table.index(of: info.name), dataType: info.dataType, shape: info.shape)
        }

        var kinds: [Document.Kind] = []
        var kindsByOp: [OpType: [(index: Int, attributes: [String: AttributeValue])]] = [:]
        var nodes: [Document.NodeEntry] = []
        for node in graph.nodes {
            let kind: Int
            if let existing = kindsByOp[node.op]?.first(where: { $0.attributes == node.attributes }) {
                kind = existing.index
            } else {
                kind = kinds.count
                kinds.append(.init(op: node.op.rawValue, attributes: node.attributes.mapValues(GraphDocument.AttributeDocument.init)))
                kindsByOp[node.op, default: []].append((kind, node.attributes))
            }
            nodes.append(.init(kind: kind, name: table.index(of: node.name), inputs: node.inputs.map(table.index(of:)),
                               outputs: node.outputs.map(table.index(of:))))
        }

        let forms = InitializerForm.choose(for: graph.initializers)
        var tensorEntries: [Document.TensorEntry] = []
        var records: [TensorRecord] = []
        var fills: [Document.FillEntry] = []
        var fillGroups: [FillGroupKey: Int] = [:]
        var products: [Document.ProductEntry] = []
        for name in graph.initializers.keys.sorted() {
            let initializer = graph.initializers[name]!, index = table.index(of: name)
            switch forms[name]! {
            case .tensor:
                tensorEntries.append(.init(name: index, dataType: initializer.storage.dataType, shape: initializer.shape, bits: nil))
                records.append(.init(name: String(index), dtype: ModelFile.dtypeNames[initializer.storage.dataType]!, shape: initializer.shape,
                                     bytes: ModelFile.littleEndianBytes(initializer.storage)))
            case .packed(let bits):
                let bytes: Data
                switch initializer.storage {
                case .int8(let values): bytes = BitPacking.pack(values, bits: bits)
                case .int32(let values): bytes = BitPacking.pack(values, bits: bits)
                case .int64(let values): bytes = BitPacking.pack(values, bits: bits)
                case .float32, .uint8: preconditionFailure("only signed integers are packed")
                }
                tensorEntries.append(.init(name: index, dataType: initializer.storage.dataType, shape: initializer.shape, bits: bits))
                records.append(.init(name: String(index), dtype: "U8", shape: [bytes.count], bytes: bytes))
            case .fill(let value):
                let key = FillGroupKey(dataType: initializer.storage.dataType, shape: initializer.shape, value: value)
                if let group = fillGroups[key] {
                    fills[group].names.append(index)
                } else {
                    fillGroups[key] = fills.count
                    fills.append(.init(dataType: key.dataType, shape: key.shape, value: value, names: [index]))
                }
            case .product(let vector, let scalar):
                products.append(.init(name: index, vector: table.index(of: vector), scalar: table.index(of: scalar)))
            }
        }

        let (names, suffixes) = table.encoded()
        let document = Document(
            name: graph.name, inputs: graph.inputs.map(value), outputs: graph.outputs.map(value), kinds: kinds,
            suffixes: suffixes, names: names, nodes: nodes, tensors: tensorEntries, fills: fills, products: products,
            valueInfo: valueInfoIsInferred ? .inferred : .listed(graph.valueInfo.keys.sorted().map { value(graph.valueInfo[$0]!) }),
            metadata: graph.metadata)
        return (try document.encoded(), records)
    }

    private struct FillGroupKey: Hashable {
        var dataType: DataType
        var shape: [Int]
        var value: FillValue
    }

    // MARK: Reading

    static func decode(graphJSON: Data, tensors records: [TensorRecord]) throws -> Graph {
        let document = try GraphDocument.decoder().decode(Document.self, from: graphJSON)
        let names = try NameTable.decode(entries: document.names, suffixes: document.suffixes)
        func name(_ index: Int, _ context: @autoclosure () -> String) throws -> String {
            guard names.indices.contains(index) else {
                throw FormatProblem("\(context()): name index \(index) is out of range (\(names.count) names)")
            }
            return names[index]
        }
        func value(_ entry: Document.ValueEntry, _ context: String) throws -> ValueInfo {
            ValueInfo(name: try name(entry.name, context), dataType: entry.dataType, shape: entry.shape)
        }

        var nodes: [Node] = []
        for (position, entry) in document.nodes.enumerated() {
            guard document.kinds.indices.contains(entry.kind) else {
                throw FormatProblem("nodes[\(position)]: kind \(entry.kind) is out of range (\(document.kinds.count) kinds)")
            }
            let kind = document.kinds[entry.kind], context = "nodes[\(position)]"
            nodes.append(try ModelFile.makeNode(name: try name(entry.name, context), op: kind.op,
                                                inputs: try entry.inputs.map { try name($0, context) },
                                                outputs: try entry.outputs.map { try name($0, context) }, attributes: kind.attributes))
        }
        let initializers = try readInitializers(document, names: names, records: records)
        var graph = Graph(name: document.name, inputs: try document.inputs.map { try value($0, "inputs") },
                          outputs: try document.outputs.map { try value($0, "outputs") }, nodes: nodes,
                          initializers: initializers, metadata: document.metadata)
        switch document.valueInfo {
        case .inferred:
            graph.valueInfo = try graph.validated().valueInfo
        case .listed(let entries):
            for entry in entries {
                let info = try value(entry, "valueInfo")
                graph.valueInfo[info.name] = info
            }
            _ = try ShapeInference.infer(graph)
        }
        return graph
    }

    /// Every initializer from its `tensors`, `fills` or `products` entry; each listed exactly once, and every
    /// safetensors tensor used by exactly one of them.
    private static func readInitializers(_ document: Document, names: [String], records: [TensorRecord]) throws -> [String: Initializer] {
        var recordsByName: [String: TensorRecord] = [:]
        for record in records { recordsByName[record.name] = record }
        var initializers: [String: Initializer] = [:]
        func add(_ index: Int, _ shape: [Int], _ storage: TensorStorage, _ context: String) throws {
            guard names.indices.contains(index) else { throw FormatProblem("\(context): name index \(index) is out of range (\(names.count) names)") }
            let name = names[index]
            guard initializers[name] == nil else { throw FormatProblem("initializer '\(name)' is listed twice") }
            initializers[name] = Initializer(name: name, shape: shape, storage: storage)
        }
        func initializerName(_ index: Int) -> String { names.indices.contains(index) ? "'\(names[index])'" : "#\(index)" }

        for (position, entry) in document.tensors.enumerated() {
            let context = "tensors[\(position)] (initializer \(initializerName(entry.name)))"
            let count = try elementCount(entry.shape, context)
            guard let record = recordsByName.removeValue(forKey: String(entry.name)) else {
                throw FormatProblem("\(context): expected safetensors tensor '\(entry.name)', which the file does not contain (or another entry uses)")
            }
            let listed = "\(ModelFile.dtypeNames[entry.dataType]!) \(entry.shape)"
            guard let bits = entry.bits else {
                guard record.dtype == ModelFile.dtypeNames[entry.dataType], record.shape == entry.shape else {
                    throw FormatProblem("\(context): tensor '\(record.name)' is \(record.dtype) \(record.shape) but the graph lists \(listed)",
                                        byteOffset: record.fileOffset)
                }
                try add(entry.name, entry.shape, ModelFile.storage(record), context)
                continue
            }
            let width: Int
            switch entry.dataType {
            case .int8: width = 8
            case .int32: width = 32
            case .int64: width = 64
            case .float32, .uint8: throw FormatProblem("\(context): only I8, I32 and I64 initializers are packed, not \(listed)")
            }
            guard bits >= 1, bits < width else { throw FormatProblem("\(context): expected 1…\(width - 1) bits per value, got \(bits)") }
            guard let needed = BitPacking.byteCount(count: count, bits: bits), record.dtype == "U8", record.shape == [needed] else {
                throw FormatProblem("\(context): \(bits)-bit packed \(listed) needs a U8 [\(BitPacking.byteCount(count: count, bits: bits) ?? -1)] tensor, "
                                    + "but tensor '\(record.name)' is \(record.dtype) \(record.shape)", byteOffset: record.fileOffset)
            }
            let storage: TensorStorage
            switch entry.dataType {
            case .int8: storage = .int8(BitPacking.unpack(record.bytes, bits: bits, count: count, as: Int8.self))
            case .int32: storage = .int32(BitPacking.unpack(record.bytes, bits: bits, count: count, as: Int32.self))
            default: storage = .int64(BitPacking.unpack(record.bytes, bits: bits, count: count, as: Int64.self))
            }
            try add(entry.name, entry.shape, storage, context)
        }
        if let unused = recordsByName.values.min(by: { $0.fileOffset < $1.fileOffset }) {
            throw FormatProblem("tensor '\(unused.name)' is not an initializer of the graph (expected a tensors entry naming it)", byteOffset: unused.fileOffset)
        }

        for (position, entry) in document.fills.enumerated() {
            let context = "fills[\(position)]"
            let count = try elementCount(entry.shape, context)
            guard count <= InitializerForm.largestFill else {
                throw FormatProblem("\(context): \(count) elements is more than a fill may have (\(InitializerForm.largestFill))")
            }
            let storage: TensorStorage
            do {
                storage = try entry.value.storage(entry.dataType, count: count)
            } catch let problem as FormatProblem {
                throw FormatProblem("\(context): \(problem.message)")
            }
            for index in entry.names { try add(index, entry.shape, storage, context) }
        }

        // Products last: their factors are tensors or fills, never products.
        let plain = initializers
        for (position, entry) in document.products.enumerated() {
            let context = "products[\(position)] (initializer \(initializerName(entry.name)))"
            func factor(_ index: Int, _ role: String) throws -> Initializer {
                guard names.indices.contains(index), let initializer = plain[names[index]], initializer.storage.dataType == .float32 else {
                    throw FormatProblem("\(context): the \(role) \(initializerName(index)) must be a Float32 initializer stored as a tensor or a fill")
                }
                return initializer
            }
            let vector = try factor(entry.vector, "vector"), scalar = try factor(entry.scalar, "scalar")
            guard scalar.storage.count == 1 else { throw FormatProblem("\(context): the scalar \(initializerName(entry.scalar)) has \(scalar.storage.count) elements") }
            let s = scalar.storage.floats[0]
            try add(entry.name, vector.shape, .float32(vector.storage.floats.map { $0 * s }), context)
        }
        return initializers
    }

    /// Elements of a listed shape; throws for negative sizes or a product that overflows.
    private static func elementCount(_ shape: [Int], _ context: String) throws -> Int {
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard dimension >= 0, !overflow else { throw FormatProblem("\(context): shape \(shape) is not a valid tensor shape") }
            count = product
        }
        return count
    }
}
