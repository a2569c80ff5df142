import Foundation
import Graph

/// A node's ONNX attributes as IR `AttributeValue`s, plus tensor-valued ones (only Constant has those).
struct ONNXAttributes {
    private(set) var values: [String: AttributeValue] = [:]
    private(set) var tensors: [String: Onnx_TensorProto] = [:]

    init(_ node: Onnx_NodeProto, nodeName: String) throws(NodeConversionError) {
        for attribute in node.attribute {
            if attribute.hasRefAttrName {
                throw .attribute(nodeName, node.opType, "attribute '\(attribute.name)' refers to a function attribute; functions are not supported")
            }
            switch Self.kind(of: attribute) {
            case .float: values[attribute.name] = .float(attribute.f)
            case .int: values[attribute.name] = .int(Int(attribute.i))
            case .string: values[attribute.name] = .string(String(decoding: attribute.s, as: UTF8.self))
            case .floats: values[attribute.name] = .floats(attribute.floats)
            case .ints: values[attribute.name] = .ints(attribute.ints.map { Int($0) })
            case .tensor: tensors[attribute.name] = attribute.t
            default:
                throw .attribute(nodeName, node.opType, "attribute '\(attribute.name)' has a kind (\(Self.kind(of: attribute))) the IR cannot hold (expected float, int, string, floats, ints)")
            }
        }
    }

    subscript(name: String) -> AttributeValue? { values[name] }

    mutating func remove(_ name: String) { values[name] = nil }
    mutating func set(_ name: String, _ value: AttributeValue) { values[name] = value }

    /// The declared kind, or for files from IR version 1 (which had no `type` field) the kind implied by the
    /// field that is set.
    private static func kind(of attribute: Onnx_AttributeProto) -> Onnx_AttributeProto.AttributeType {
        if attribute.hasType && attribute.type != .undefined { return attribute.type }
        if attribute.hasF { return .float }
        if attribute.hasI { return .int }
        if attribute.hasS { return .string }
        if attribute.hasT { return .tensor }
        if attribute.hasG { return .graph }
        if !attribute.floats.isEmpty { return .floats }
        if !attribute.ints.isEmpty { return .ints }
        if !attribute.strings.isEmpty { return .strings }
        return .undefined
    }
}
