import Foundation

/// How one initializer's values are kept in a model file (format 2). The writer picks, per initializer, the most
/// compact form that gives back the same values bit for bit; the reader rebuilds the same `TensorStorage`.
enum InitializerForm: Equatable {
    /// A safetensors tensor holding the values as they are (F32, I8, U8, I32, I64).
    case tensor
    /// A U8 safetensors tensor holding signed integers in `bits` bits each (`BitPacking`); used when every value
    /// of an I8/I32/I64 initializer fits in fewer bits than its type (sub-8-bit weights, int32 biases).
    case packed(bits: Int)
    /// Every element equals one value (zero points, scalar scales); no tensor data at all.
    case fill(FillValue)
    /// `vector[i] × scalar` computed in Float32 for every i: a QDQ bias scale is the input scale times the
    /// per-channel weight scale, so it is not stored again. Both factors are stored as tensors or fills.
    case product(vector: String, scalar: String)

    /// Fills larger than this are stored as tensors (a reader then never allocates more than the file implies
    /// plus this).
    static let largestFill = 1 << 26

    /// The form of every initializer.
    static func choose(for initializers: [String: Initializer]) -> [String: InitializerForm] {
        var forms: [String: InitializerForm] = [:]
        for (name, initializer) in initializers {
            if initializer.storage.count <= largestFill, let value = FillValue(constant: initializer.storage) {
                forms[name] = .fill(value)
            } else if let bits = packedBits(initializer.storage) {
                forms[name] = .packed(bits: bits)
            } else {
                forms[name] = .tensor
            }
        }
        findProducts(initializers, &forms)
        return forms
    }

    /// The bits to pack an integer tensor to, nil when packing would not save anything.
    static func packedBits(_ storage: TensorStorage) -> Int? {
        let bits: Int, width: Int
        switch storage {
        case .int8(let values): (bits, width) = (BitPacking.minimumBits(values), 8)
        case .int32(let values): (bits, width) = (BitPacking.minimumBits(values), 32)
        case .int64(let values): (bits, width) = (BitPacking.minimumBits(values), 64)
        case .float32, .uint8: return nil
        }
        return bits < width && storage.count > 0 ? bits : nil
    }

    /// Marks Float32 tensors that equal (bitwise) another Float32 tensor of the same shape times a Float32
    /// scalar. A factor is never itself a product, so reading needs no ordering beyond "products last".
    private static func findProducts(_ initializers: [String: Initializer], _ forms: inout [String: InitializerForm]) {
        var scalarsByBits: [UInt32: String] = [:]
        var vectorsByShape: [[Int]: [String]] = [:]
        for name in initializers.keys.sorted() {
            guard case .float32(let values) = initializers[name]!.storage else { continue }
            if values.count == 1 {
                if scalarsByBits[values[0].bitPattern] == nil { scalarsByBits[values[0].bitPattern] = name }
            } else if values.count > 1, forms[name] == .tensor, values.allSatisfy(\.isFinite) {
                vectorsByShape[initializers[name]!.shape, default: []].append(name)
            }
        }
        guard !scalarsByBits.isEmpty else { return }
        var factors: Set<String> = []
        for (_, names) in vectorsByShape.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
            for target in names where !factors.contains(target) {
                guard case .float32(let wanted) = initializers[target]!.storage else { continue }
                for vectorName in names where vectorName != target && forms[vectorName] == .tensor {
                    guard case .float32(let vector) = initializers[vectorName]!.storage,
                          let scalarName = scalar(turning: vector, into: wanted, candidates: scalarsByBits),
                          case .float32(let scalar) = initializers[scalarName]!.storage else { continue }
                    let s = scalar[0]
                    guard zip(vector, wanted).allSatisfy({ ($0 * s).bitPattern == $1.bitPattern }) else { continue }
                    forms[target] = .product(vector: vectorName, scalar: scalarName)
                    factors.insert(vectorName)
                    factors.insert(scalarName)
                    break
                }
            }
        }
    }

    /// A scalar `s` with `vector[i] × s == wanted[i]` at the first non-zero element: `s` is within a few ulps
    /// of `wanted[i] / vector[i]`, so only those bit patterns are looked up.
    private static func scalar(turning vector: [Float], into wanted: [Float], candidates: [UInt32: String]) -> String? {
        guard let i = vector.firstIndex(where: { $0.isNormal }), wanted[i].isNormal else { return nil }
        var low = wanted[i] / vector[i], high = low
        if let name = candidates[low.bitPattern], vector[i] * low == wanted[i] { return name }
        for _ in 0..<4 {
            low = low.nextDown
            high = high.nextUp
            for guess in [low, high] where vector[i] * guess == wanted[i] {
                if let name = candidates[guess.bitPattern] { return name }
            }
        }
        return nil
    }
}

/// The value of a constant tensor as the JSON number written for it: an integer for integer tensors; for
/// Float32 tensors a number whose nearest Float32 is the value bit for bit (the shortest such decimal, or the
/// exact one where reading through Double would round differently; never −0). Equality is bitwise.
enum FillValue: Hashable {
    case integer(Int64)
    case real(Double)

    /// The value when every element of `storage` is bitwise the same (and, for Float32, finite); nil otherwise.
    init?(constant storage: TensorStorage) {
        func single<T>(_ values: [T], _ same: (T, T) -> Bool) -> T? {
            guard let first = values.first, values.allSatisfy({ same($0, first) }) else { return nil }
            return first
        }
        switch storage {
        case .float32(let values):
            // −0 would be written "-0", which JSON readers other than ours (Python's) take for the integer 0.
            guard let value = single(values, { $0.bitPattern == $1.bitPattern }), value.isFinite,
                  value != 0 || value.sign == .plus else { return nil }
            // Float.description is the shortest decimal that reads back as the value; the reader goes through
            // Double, which could round such a decimal differently in rare cases, so that is checked.
            if let shortest = Double(value.description), Float(shortest).bitPattern == value.bitPattern {
                self = .real(shortest)
            } else {
                self = .real(Double(value))
            }
        case .int8(let values): guard let value = single(values, ==) else { return nil }; self = .integer(Int64(value))
        case .uint8(let values): guard let value = single(values, ==) else { return nil }; self = .integer(Int64(value))
        case .int32(let values): guard let value = single(values, ==) else { return nil }; self = .integer(Int64(value))
        case .int64(let values): guard let value = single(values, ==) else { return nil }; self = .integer(value)
        }
    }

    /// `count` copies of the value as `dataType`; throws when the value does not fit the type.
    func storage(_ dataType: DataType, count: Int) throws -> TensorStorage {
        func integer<T: FixedWidthInteger>(_: T.Type) throws -> T {
            guard case .integer(let value) = self, let exact = T(exactly: value) else {
                throw FormatProblem("fill value \(self) does not fit \(ModelFile.dtypeNames[dataType]!)")
            }
            return exact
        }
        switch dataType {
        case .float32:
            guard case .real(let value) = self, Float(value).isFinite else {
                throw FormatProblem("fill value \(self) is not a finite Float32")
            }
            return .float32([Float](repeating: Float(value), count: count))
        case .int8: return .int8([Int8](repeating: try integer(Int8.self), count: count))
        case .uint8: return .uint8([UInt8](repeating: try integer(UInt8.self), count: count))
        case .int32: return .int32([Int32](repeating: try integer(Int32.self), count: count))
        case .int64: return .int64([Int64](repeating: try integer(Int64.self), count: count))
        }
    }

    static func == (a: FillValue, b: FillValue) -> Bool {
        switch (a, b) {
        case (.integer(let x), .integer(let y)): return x == y
        case (.real(let x), .real(let y)): return x.bitPattern == y.bitPattern
        default: return false
        }
    }

    func hash(into hasher: inout Hasher) {
        switch self {
        case .integer(let value): hasher.combine(0); hasher.combine(value)
        case .real(let value): hasher.combine(1); hasher.combine(value.bitPattern)
        }
    }
}

extension FillValue: CustomStringConvertible {
    var description: String {
        switch self {
        case .integer(let value): return "\(value)"
        case .real(let value): return "\(value)"
        }
    }
}
