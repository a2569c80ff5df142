import Foundation

/// Signed integers stored in `bits` bits each (two's complement of the low `bits` bits), back to back with no
/// padding between values: value `i` occupies bits `i·bits ..< (i+1)·bits` of the byte stream, where bit `j` of the
/// stream is bit `j % 8` (least significant first) of byte `j / 8`. The last byte is padded with zero bits.
/// For 4 bits this is the usual nibble order: value 0 in the low nibble of byte 0, value 1 in its high nibble
/// (ONNX INT4, ggml Q4). In numpy: `np.unpackbits(u8, bitorder="little")[:n*b].reshape(n, b)`, then sign-extend.
enum BitPacking {
    /// Bits of the narrowest two's complement integer holding every value (1 for an empty or all-zero list).
    static func minimumBits<T: FixedWidthInteger & SignedInteger>(_ values: [T]) -> Int {
        var widest = 1
        for value in values {
            let wide = Int64(value)
            // v and ~v need the same number of magnitude bits; one more bit holds the sign.
            let magnitude = wide < 0 ? ~wide : wide
            widest = max(widest, 65 - magnitude.leadingZeroBitCount)
        }
        return widest
    }

    /// Bytes needed for `count` values of `bits` bits; nil when that overflows.
    static func byteCount(count: Int, bits: Int) -> Int? {
        let (totalBits, overflow) = count.multipliedReportingOverflow(by: bits)
        guard !overflow, totalBits <= Int.max - 7 else { return nil }
        return (totalBits + 7) / 8
    }

    /// Packs values that fit in `bits` bits (1 ≤ bits < T.bitWidth; the caller checked `minimumBits`).
    static func pack<T: FixedWidthInteger & SignedInteger>(_ values: [T], bits: Int) -> Data {
        precondition(bits >= 1 && bits < T.bitWidth, "packing to \(bits) bits")
        var bytes = [UInt8](repeating: 0, count: byteCount(count: values.count, bits: bits)!)
        var bitPosition = 0
        for value in values {
            var remaining = bits
            var pattern = UInt64(truncatingIfNeeded: value)
            while remaining > 0 {
                let byte = bitPosition >> 3, offset = bitPosition & 7
                let take = min(8 - offset, remaining)
                bytes[byte] |= UInt8(truncatingIfNeeded: (pattern & ((1 << UInt64(take)) - 1)) << UInt64(offset))
                pattern >>= UInt64(take)
                remaining -= take
                bitPosition += take
            }
        }
        return Data(bytes)
    }

    /// The `count` values packed in `bytes` (which holds exactly `byteCount(count:bits:)` bytes), sign-extended.
    static func unpack<T: FixedWidthInteger & SignedInteger>(_ bytes: Data, bits: Int, count: Int, as _: T.Type) -> [T] {
        precondition(bits >= 1 && bits < T.bitWidth && bytes.count == byteCount(count: count, bits: bits), "unpacking \(count) × \(bits) bits")
        let signShift = UInt64(64 - bits)
        return bytes.withUnsafeBytes { raw -> [T] in
            var values = [T](repeating: 0, count: count)
            var bitPosition = 0
            for index in 0..<count {
                var pattern: UInt64 = 0, filled = 0
                while filled < bits {
                    let byte = bitPosition >> 3, offset = bitPosition & 7
                    let take = min(8 - offset, bits - filled)
                    let chunk = (UInt64(raw[byte]) >> UInt64(offset)) & ((1 << UInt64(take)) - 1)
                    pattern |= chunk << UInt64(filled)
                    filled += take
                    bitPosition += take
                }
                // Move the value's sign bit to bit 63, then shift back arithmetically.
                values[index] = T(truncatingIfNeeded: Int64(bitPattern: pattern << signShift) >> Int64(signShift))
            }
            return values
        }
    }
}
