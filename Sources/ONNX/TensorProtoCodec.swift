import Foundation
import Graph

/// Converts between ONNX `TensorProto` (raw little-endian bytes or typed repeated fields) and the IR's
/// shape + `TensorStorage`.
enum TensorProtoCodec {
    /// ONNX `TensorProto.DataType` values for the types the IR has.
    static func onnxElementType(_ type: DataType) -> Int32 {
        switch type {
        case .float32: return 1
        case .uint8: return 2
        case .int8: return 3
        case .int32: return 6
        case .int64: return 7
        }
    }

    static func dataType(onnxElementType value: Int32) -> DataType? {
        switch value {
        case 1: return .float32
        case 2: return .uint8
        case 3: return .int8
        case 6: return .int32
        case 7: return .int64
        default: return nil
        }
    }

    static func elementTypeName(_ value: Int32) -> String {
        let names: [Int32: String] = [0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16",
                                      6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE",
                                      12: "UINT32", 13: "UINT64", 16: "BFLOAT16"]
        return names[value] ?? "type \(value)"
    }

    /// Decodes a tensor. DOUBLE becomes float32 and BOOL becomes uint8, because such constants only appear as
    /// exporter scalars (Dropout's training_mode, Clip bounds) that the importer folds away.
    static func decode(_ tensor: Onnx_TensorProto, what: String) throws(NodeConversionError) -> (shape: [Int], storage: TensorStorage) {
        let shape = tensor.dims.map { Int($0) }
        guard shape.allSatisfy(DimensionLimits.isValidSize), let count = DimensionLimits.elementCount(shape) else {
            throw .tensor("\(what): invalid dimensions \(shape)")
        }
        let raw = tensor.hasRawData ? tensor.rawData : nil
        let storage: TensorStorage
        switch tensor.dataType {
        case 1:
            storage = .float32(raw.map { littleEndianValues($0, as: UInt32.self).map { Float(bitPattern: $0) } } ?? tensor.floatData)
        case 11:
            let doubles = raw.map { littleEndianValues($0, as: UInt64.self).map { Double(bitPattern: $0) } } ?? tensor.doubleData
            storage = .float32(doubles.map { Float($0) })
        case 2, 9:
            storage = .uint8(raw.map { [UInt8]($0) } ?? tensor.int32Data.map { UInt8(truncatingIfNeeded: $0) })
        case 3:
            storage = .int8(raw.map { [UInt8]($0).map { Int8(bitPattern: $0) } } ?? tensor.int32Data.map { Int8(truncatingIfNeeded: $0) })
        case 6:
            storage = .int32(raw.map { littleEndianValues($0, as: UInt32.self).map { Int32(bitPattern: $0) } } ?? tensor.int32Data)
        case 7:
            storage = .int64(raw.map { littleEndianValues($0, as: UInt64.self).map { Int64(bitPattern: $0) } } ?? tensor.int64Data)
        default:
            throw .tensor("\(what): element type \(elementTypeName(tensor.dataType)) is not supported (FLOAT, UINT8, INT8, INT32, INT64 are)")
        }
        guard storage.count == count else {
            if storage.count == 0 && count > 0 {
                throw .tensor("\(what): no data for \(count) elements (external data files are not supported)")
            }
            throw .tensor("\(what): shape \(shape) needs \(count) elements but the data holds \(storage.count)")
        }
        return (shape, storage)
    }

    /// Encodes as raw little-endian bytes, the form every ONNX consumer reads fastest.
    static func encode(name: String, shape: [Int], storage: TensorStorage) -> Onnx_TensorProto {
        var tensor = Onnx_TensorProto()
        tensor.name = name
        tensor.dims = shape.map { Int64($0) }
        tensor.dataType = onnxElementType(storage.dataType)
        switch storage {
        case .float32(let values): tensor.rawData = littleEndianBytes(values.map { $0.bitPattern })
        case .int8(let values): tensor.rawData = Data(values.map { UInt8(bitPattern: $0) })
        case .uint8(let values): tensor.rawData = Data(values)
        case .int32(let values): tensor.rawData = littleEndianBytes(values.map { UInt32(bitPattern: $0) })
        case .int64(let values): tensor.rawData = littleEndianBytes(values.map { UInt64(bitPattern: $0) })
        }
        return tensor
    }

    private static func littleEndianValues<T: FixedWidthInteger>(_ data: Data, as: T.Type) -> [T] {
        let size = MemoryLayout<T>.size
        let count = data.count / size
        return data.withUnsafeBytes { buffer in
            (0..<count).map { T(littleEndian: buffer.loadUnaligned(fromByteOffset: $0 * size, as: T.self)) }
        }
    }

    private static func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> Data {
        var data = Data(count: values.count * MemoryLayout<T>.size)
        data.withUnsafeMutableBytes { buffer in
            for (index, value) in values.enumerated() {
                buffer.storeBytes(of: value.littleEndian, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
            }
        }
        return data
    }
}
