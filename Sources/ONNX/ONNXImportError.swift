import Foundation

/// Why an ONNX file could not become a `Graph`. Every message names the file, so a pipeline that converts several
/// models says which one failed without extra context.
public struct ONNXImportError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Equatable {
        /// The bytes are not a well-formed protobuf message (truncated, corrupt, not ONNX at all).
        case malformedFile
        /// The model uses an opset outside the range the importer understands.
        case unsupportedOpset
        /// A node's op type (or domain) is not one the IR knows.
        case unsupportedOperator
        /// A node uses an attribute value or input form the engines do not implement.
        case unsupportedAttribute
        /// A tensor's data type or encoding cannot be represented.
        case unsupportedTensor
        /// The graph is structurally wrong (missing graph, dangling names, shape computations that cannot be folded).
        case invalidGraph
    }

    public let kind: Kind
    /// The file name (or the name given to `importModel(data:name:forTraining:)`).
    public let file: String
    public let message: String
    /// The byte offset in the file the problem was found at, for malformed files.
    public let byteOffset: Int?

    public init(kind: Kind, file: String, message: String, byteOffset: Int? = nil) {
        self.kind = kind
        self.file = file
        self.message = message
        self.byteOffset = byteOffset
    }

    public var description: String {
        if let byteOffset {
            return "\(file): at byte \(byteOffset): \(message)"
        }
        return "\(file): \(message)"
    }
}

/// A problem found while converting one node; the importer adds the file name and turns it into `ONNXImportError`.
/// Kept separate so the per-op code does not thread the file name through every helper.
struct NodeConversionError: Error {
    let kind: ONNXImportError.Kind
    let message: String

    static func attribute(_ node: String, _ op: String, _ message: String) -> NodeConversionError {
        NodeConversionError(kind: .unsupportedAttribute, message: "node '\(node)' (\(op)): \(message)")
    }

    static func graph(_ node: String, _ op: String, _ message: String) -> NodeConversionError {
        NodeConversionError(kind: .invalidGraph, message: "node '\(node)' (\(op)): \(message)")
    }

    static func tensor(_ message: String) -> NodeConversionError {
        NodeConversionError(kind: .unsupportedTensor, message: message)
    }
}
