import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Graph
import SwiftProtobuf

/// Why a `Graph` could not be written as ONNX.
public struct ONNXExportError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "ONNX export: \(message)" }
}

/// Writes a `Graph` as an ONNX model (default-domain opsets 13–18): float graphs and QDQ graphs. The IR's attribute
/// forms are turned back into ONNX's input forms (Clip bounds, Reshape shape, Pad pads/value, Dropout ratio become
/// constant initializers); a dynamic dimension becomes dim_param "N". A QDQ graph (one with QuantizeLinear or
/// DequantizeLinear nodes) is written in standard ONNX QDQ form (`StandardQDQForm`): no qatflow `bits` attribute,
/// sub-8-bit activations clipped in the integer domain, scalar per-tensor parameters.
public enum ONNXExporter {
    public static let supportedOpsets: ClosedRange<Int> = 13...18

    public static func export(_ graph: Graph, opset: Int = 13) throws -> Data {
        guard supportedOpsets.contains(opset) else {
            throw ONNXExportError("opset \(opset) is not supported (supported: \(supportedOpsets.lowerBound)–\(supportedOpsets.upperBound))")
        }
        var model = Onnx_ModelProto()
        model.irVersion = irVersion(forOpset: opset)
        model.producerName = "qatflow"
        var opsetImport = Onnx_OperatorSetIdProto()
        opsetImport.domain = ""
        opsetImport.version = Int64(opset)
        model.opsetImport = [opsetImport]
        let isQDQ = graph.nodes.contains { $0.op == .quantizeLinear || $0.op == .dequantizeLinear }
        var writer = GraphProtoWriter(graph: isQDQ ? try StandardQDQForm.rewrite(graph) : graph)
        model.graph = try writer.write()
        model.metadataProps = graph.metadata.keys.sorted().map { key in
            var entry = Onnx_StringStringEntryProto()
            entry.key = key
            entry.value = graph.metadata[key]!
            return entry
        }
        return try model.serializedBytes()
    }

    /// Writes atomically (temp file in the same directory, then rename) so a crash never leaves half a model.
    public static func write(_ graph: Graph, to url: URL, opset: Int = 13) throws {
        let data = try export(graph, opset: opset)
        let directory = url.deletingLastPathComponent()
        let temporary = directory.appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString).tmp")
        try data.write(to: temporary)
        // rename(2) within one directory replaces the target atomically; readers see the old or the new file.
        guard rename(temporary.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: temporary)
            throw ONNXExportError("cannot move \(temporary.path) to \(url.path): \(reason)")
        }
    }

    /// The IR version that introduced each opset range (ONNX's versioning table).
    private static func irVersion(forOpset opset: Int) -> Int64 {
        switch opset {
        case ...14: return 7
        default: return 8
        }
    }
}

/// Converts the graph body: values, initializers (raw little-endian), nodes.
private struct GraphProtoWriter {
    let graph: Graph
    private var initializers: [Onnx_TensorProto] = []
    private var takenNames: Set<String>
    /// Element type of every value, so constants that ONNX types like their operand (Clip bounds) match it.
    private let elementTypes: [String: DataType]

    init(graph: Graph) {
        self.graph = graph
        var names = Set(graph.initializers.keys)
        names.formUnion(graph.inputs.map(\.name))
        for node in graph.nodes { names.formUnion(node.inputs); names.formUnion(node.outputs) }
        takenNames = names
        elementTypes = Self.elementTypes(of: graph)
    }

    /// Forward pass over the nodes: QuantizeLinear yields its zero point's type (uint8 when absent), the
    /// type-preserving ops their input's type, everything else float32.
    private static func elementTypes(of graph: Graph) -> [String: DataType] {
        var types = graph.valueInfo.mapValues(\.dataType)
        for input in graph.inputs { types[input.name] = input.dataType }
        for (name, initializer) in graph.initializers { types[name] = initializer.storage.dataType }
        for node in graph.nodes {
            let type: DataType
            switch node.op {
            case .quantizeLinear:
                type = node.inputs.count > 2 ? graph.initializers[node.inputs[2]]?.storage.dataType ?? .uint8 : .uint8
            case .dequantizeLinear:
                type = .float32
            case .clip, .relu, .identity, .reshape, .flatten, .maxPool, .pad, .dropout, .concat:
                type = types[node.inputs.first ?? ""] ?? .float32
            default:
                type = .float32
            }
            for output in node.outputs where !output.isEmpty { types[output] = type }
        }
        return types
    }

    mutating func write() throws -> Onnx_GraphProto {
        var proto = Onnx_GraphProto()
        proto.name = graph.name
        proto.input = graph.inputs.map(valueInfo)
        proto.output = graph.outputs.map(valueInfo)
        initializers = graph.initializers.keys.sorted().map { name in
            let initializer = graph.initializers[name]!
            return TensorProtoCodec.encode(name: name, shape: initializer.shape, storage: initializer.storage)
        }
        proto.node = try graph.nodes.map { try nodeProto($0) }
        proto.initializer = initializers
        return proto
    }

    private func valueInfo(_ info: ValueInfo) -> Onnx_ValueInfoProto {
        var proto = Onnx_ValueInfoProto()
        proto.name = info.name
        var tensorType = Onnx_TypeProto.Tensor()
        tensorType.elemType = TensorProtoCodec.onnxElementType(info.dataType)
        var shape = Onnx_TensorShapeProto()
        shape.dim = info.shape.map { size in
            var dimension = Onnx_TensorShapeProto.Dimension()
            if size >= 0 {
                dimension.dimValue = Int64(size)
            } else {
                dimension.dimParam = "N"
            }
            return dimension
        }
        tensorType.shape = shape
        proto.type.tensorType = tensorType
        return proto
    }

    private mutating func nodeProto(_ node: Node) throws -> Onnx_NodeProto {
        var proto = Onnx_NodeProto()
        proto.name = node.name
        proto.opType = node.op.rawValue
        proto.output = node.outputs
        var inputs = node.inputs
        var attributes = node.attributes
        switch node.op {
        case .clip:
            inputs = [inputs[0]]
            // ONNX types Clip's bounds like its input: an integer Clip (after a sub-8-bit QuantizeLinear) gets integer bounds.
            let boundType = elementTypes[inputs[0]] ?? .float32
            for bound in ["min", "max"] {
                if let value = attributes.removeValue(forKey: bound)?.float {
                    inputs.append(addConstant("\(node.name)_\(bound)", shape: [], storage: Self.scalar(value, as: boundType)))
                } else {
                    inputs.append("")
                }
            }
            while inputs.last == "" { inputs.removeLast() }
        case .reshape:
            guard let shape = attributes.removeValue(forKey: "shape")?.ints else {
                throw ONNXExportError("node '\(node.name)' (Reshape) has no 'shape' attribute")
            }
            inputs = [inputs[0], addConstant("\(node.name)_shape", shape: [shape.count], storage: .int64(shape.map { Int64($0) }))]
        case .pad:
            guard let pads = attributes.removeValue(forKey: "pads")?.ints else {
                throw ONNXExportError("node '\(node.name)' (Pad) has no 'pads' attribute")
            }
            let value = attributes.removeValue(forKey: "value")?.float ?? 0
            attributes["mode"] = .string("constant")
            inputs = [inputs[0],
                      addConstant("\(node.name)_pads", shape: [pads.count], storage: .int64(pads.map { Int64($0) })),
                      addConstant("\(node.name)_value", shape: [], storage: .float32([value]))]
        case .dropout:
            inputs = [inputs[0]]
            if let ratio = attributes.removeValue(forKey: "ratio")?.float {
                inputs.append(addConstant("\(node.name)_ratio", shape: [], storage: .float32([ratio])))
            }
        default:
            break
        }
        proto.input = inputs
        for name in Self.floatAttributes {
            // An engine may store a whole-number float as .int; ONNX Runtime rejects an INT where FLOAT is declared.
            if case .int(let value)? = attributes[name] { attributes[name] = .float(Float(value)) }
        }
        proto.attribute = attributes.keys.sorted().map { attributeProto(name: $0, value: attributes[$0]!) }
        return proto
    }

    /// A scalar constant of `type`; integer bounds are whole numbers already (quantized ranges), and an infinite
    /// bound saturates to the type's end.
    private static func scalar(_ value: Float, as type: DataType) -> TensorStorage {
        let whole = Int(max(min(value.rounded(), 9e18), -9e18))
        switch type {
        case .float32: return .float32([value])
        case .uint8: return .uint8([UInt8(clamping: whole)])
        case .int8: return .int8([Int8(clamping: whole)])
        case .int32: return .int32([Int32(clamping: whole)])
        case .int64: return .int64([Int64(whole)])
        }
    }

    /// Attributes ONNX declares as FLOAT on the ops the IR has.
    private static let floatAttributes = ["epsilon", "momentum", "alpha", "beta"]

    /// Adds a constant initializer under an unused name (the IR node name plus a role).
    private mutating func addConstant(_ proposed: String, shape: [Int], storage: TensorStorage) -> String {
        var name = proposed
        var suffix = 1
        while takenNames.contains(name) {
            name = "\(proposed)_\(suffix)"
            suffix += 1
        }
        takenNames.insert(name)
        initializers.append(TensorProtoCodec.encode(name: name, shape: shape, storage: storage))
        return name
    }

    private func attributeProto(name: String, value: AttributeValue) -> Onnx_AttributeProto {
        var proto = Onnx_AttributeProto()
        proto.name = name
        switch value {
        case .int(let v): proto.type = .int; proto.i = Int64(v)
        case .float(let v): proto.type = .float; proto.f = v
        case .ints(let v): proto.type = .ints; proto.ints = v.map { Int64($0) }
        case .floats(let v): proto.type = .floats; proto.floats = v
        case .string(let v): proto.type = .string; proto.s = Data(v.utf8)
        }
        return proto
    }
}
