import Foundation

/// Element types of values and initializers.
public enum DataType: String, Codable, Sendable, CaseIterable {
    case float32, int8, uint8, int32, int64
}

/// The operators the IR knows. Semantics are ONNX's (same input order, attribute names and defaults), with
/// these normalisations done by the importer so that every engine sees one form:
/// - `clip`: `min`/`max` are float attributes (never inputs);
/// - `reshape`: target shape is the int64 attribute `shape` (never an input);
/// - `pad`: `pads` and `value` are attributes, mode constant only;
/// - `batchNormalization`: scale, bias, mean, var are initializers (inputs 1–4);
/// - `gemm`/`conv`: weights and bias are initializers;
/// - `quantizeLinear`/`dequantizeLinear`: scale and zero point are initializers (inputs 1–2), `axis` attribute.
public enum OpType: String, Codable, Sendable, CaseIterable {
    case conv = "Conv"
    case batchNormalization = "BatchNormalization"
    case relu = "Relu"
    case clip = "Clip"
    case add = "Add"
    case mul = "Mul"
    case globalAveragePool = "GlobalAveragePool"
    case averagePool = "AveragePool"
    case maxPool = "MaxPool"
    case gemm = "Gemm"
    case matMul = "MatMul"
    case flatten = "Flatten"
    case reshape = "Reshape"
    case dropout = "Dropout"
    case identity = "Identity"
    case concat = "Concat"
    case softmax = "Softmax"
    case pad = "Pad"
    case quantizeLinear = "QuantizeLinear"
    case dequantizeLinear = "DequantizeLinear"
}

/// A node attribute (ONNX attribute kinds we need).
public enum AttributeValue: Codable, Sendable, Equatable {
    case int(Int)
    case float(Float)
    case ints([Int])
    case floats([Float])
    case string(String)

    public var int: Int? { if case .int(let v) = self { return v }; return nil }
    public var float: Float? {
        switch self {
        case .float(let v): return v
        case .int(let v): return Float(v)
        default: return nil
        }
    }
    public var ints: [Int]? { if case .ints(let v) = self { return v }; return nil }
    public var floats: [Float]? { if case .floats(let v) = self { return v }; return nil }
    public var string: String? { if case .string(let v) = self { return v }; return nil }
}

/// Constant tensor data (weights, biases, BN statistics, quantization parameters).
public enum TensorStorage: Sendable, Equatable {
    case float32([Float])
    case int8([Int8])
    case uint8([UInt8])
    case int32([Int32])
    case int64([Int64])

    public var dataType: DataType {
        switch self {
        case .float32: return .float32
        case .int8: return .int8
        case .uint8: return .uint8
        case .int32: return .int32
        case .int64: return .int64
        }
    }

    public var count: Int {
        switch self {
        case .float32(let v): return v.count
        case .int8(let v): return v.count
        case .uint8(let v): return v.count
        case .int32(let v): return v.count
        case .int64(let v): return v.count
        }
    }

    /// The values as Float (for float math on any constant).
    public var floats: [Float] {
        switch self {
        case .float32(let v): return v
        case .int8(let v): return v.map(Float.init)
        case .uint8(let v): return v.map(Float.init)
        case .int32(let v): return v.map(Float.init)
        case .int64(let v): return v.map(Float.init)
        }
    }
}

/// A named constant tensor.
public struct Initializer: Sendable, Equatable {
    public var name: String
    public var shape: [Int]
    public var storage: TensorStorage

    public init(name: String, shape: [Int], storage: TensorStorage) {
        precondition(shape.reduce(1, *) == storage.count, "initializer \(name): shape \(shape) does not match \(storage.count) elements")
        self.name = name
        self.shape = shape
        self.storage = storage
    }
}

/// A named runtime value's type. `-1` in `shape` is a dynamic dimension (the batch, usually).
public struct ValueInfo: Codable, Sendable, Equatable {
    public var name: String
    public var dataType: DataType
    public var shape: [Int]

    public init(name: String, dataType: DataType = .float32, shape: [Int]) {
        self.name = name
        self.dataType = dataType
        self.shape = shape
    }
}

/// One operation. Inputs and outputs name values (graph inputs, initializers or other nodes' outputs).
/// An empty string in `inputs` is an omitted optional input, as in ONNX.
public struct Node: Codable, Sendable, Equatable {
    public var name: String
    public var op: OpType
    public var inputs: [String]
    public var outputs: [String]
    public var attributes: [String: AttributeValue]

    public init(name: String, op: OpType, inputs: [String], outputs: [String], attributes: [String: AttributeValue] = [:]) {
        self.name = name
        self.op = op
        self.inputs = inputs
        self.outputs = outputs
        self.attributes = attributes
    }

    public func int(_ key: String, default value: Int) -> Int { attributes[key]?.int ?? value }
    public func float(_ key: String, default value: Float) -> Float { attributes[key]?.float ?? value }
    public func ints(_ key: String) -> [Int]? { attributes[key]?.ints }
}

/// The model IR every engine and stage speaks: nodes in topological order, constant initializers,
/// graph inputs and outputs, and inferred types of intermediate values.
public struct Graph: Sendable, Equatable {
    public var name: String
    public var inputs: [ValueInfo]
    public var outputs: [ValueInfo]
    public var nodes: [Node]
    public var initializers: [String: Initializer]
    /// Inferred types of intermediate values (filled by shape inference).
    public var valueInfo: [String: ValueInfo]
    /// Free-form facts carried with the model (producer, preprocessing, quantization scheme ...).
    public var metadata: [String: String]

    public init(name: String, inputs: [ValueInfo], outputs: [ValueInfo], nodes: [Node],
                initializers: [String: Initializer] = [:], valueInfo: [String: ValueInfo] = [:],
                metadata: [String: String] = [:]) {
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.nodes = nodes
        self.initializers = initializers
        self.valueInfo = valueInfo
        self.metadata = metadata
    }
}
