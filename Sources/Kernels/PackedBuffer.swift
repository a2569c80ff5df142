/// Immutable packed weights, 64-byte aligned (one cache line, one zmm load) inside an ordinary array, so the
/// packed form is a value type that can be shared between threads without any unsafe wrapper.
///
/// The array is over-allocated by 63 bytes and the data starts at the first aligned address in it. An array that
/// is never mutated keeps its buffer, so the offset found at packing time stays valid; `withBytes` checks it.
struct PackedBuffer: Sendable {
    private static let alignment = 64
    private let storage: [UInt8]
    private let offset: Int
    let byteCount: Int

    init(byteCount: Int, pack: (UnsafeMutableRawPointer) -> Void) {
        var storage = [UInt8](repeating: 0, count: byteCount + PackedBuffer.alignment - 1)
        let offset = storage.withUnsafeMutableBytes { raw -> Int in
            let offset = PackedBuffer.alignedOffset(raw.baseAddress!)
            pack(raw.baseAddress! + offset)
            return offset
        }
        self.storage = storage
        self.offset = offset
        self.byteCount = byteCount
    }

    func withBytes<R>(_ body: (UnsafeRawPointer) throws -> R) rethrows -> R {
        try storage.withUnsafeBytes { raw in
            precondition(PackedBuffer.alignedOffset(raw.baseAddress!) == offset, "packed weights moved")
            return try body(raw.baseAddress! + offset)
        }
    }

    private static func alignedOffset(_ address: UnsafeRawPointer) -> Int {
        let misalignment = Int(bitPattern: address) % alignment
        return misalignment == 0 ? 0 : alignment - misalignment
    }
}
