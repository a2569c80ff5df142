import CZlib
import Foundation

/// A read-only view of a zip archive held in memory: just enough of the format (APPNOTE.TXT) for `.npz` files.
///
/// Entry sizes, CRCs and methods come from the central directory, never from the local headers, because numpy
/// (through Python's `zipfile`, which it calls with `force_zip64=True`) writes 0xFFFFFFFF sizes plus a ZIP64
/// extra field into *every* local header, even for tiny entries; writers to unseekable streams put zeros there
/// and the real values in a data descriptor after the data. The central directory always holds the real values
/// (with a ZIP64 extra field only when a value does not fit 32 bits: entries or offsets beyond 4 GB).
struct ZipArchive {
    struct Entry {
        let name: String
        /// 0 = stored, 8 = deflate; anything else is reported when the entry is read.
        let method: UInt16
        let flags: UInt16
        let crc32: UInt32
        let compressedSize: Int
        let uncompressedSize: Int
        let localHeaderOffset: Int
        /// Where this entry's central directory record starts, for error messages.
        let recordOffset: Int
    }

    let path: String
    let bytes: [UInt8]
    /// In central directory order.
    let entries: [Entry]

    static let localHeaderSignature: UInt32 = 0x0403_4b50
    static let centralHeaderSignature: UInt32 = 0x0201_4b50
    static let endOfCentralDirectorySignature: UInt32 = 0x0605_4b50
    static let zip64EndSignature: UInt32 = 0x0606_4b50
    static let zip64LocatorSignature: UInt32 = 0x0706_4b50

    /// True when `bytes` start like a zip archive (a local header, or the end record of an empty archive).
    static func looksLikeZip(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 4 && bytes[0] == 0x50 && bytes[1] == 0x4b
            && ((bytes[2] == 3 && bytes[3] == 4) || (bytes[2] == 5 && bytes[3] == 6))
    }

    init(bytes: [UInt8], path: String) throws {
        self.path = path
        self.bytes = bytes
        func fail(_ offset: Int, _ problem: String) -> DatasetError {
            .malformedFile(path: path, byteOffset: offset, problem: problem)
        }

        // The end record is 22 bytes plus a comment of up to 65,535 bytes, so it starts in the file's last
        // 65,557 bytes. Searching backwards finds the real one even if the comment happens to contain "PK\5\6";
        // the comment length must also fit in what follows, which rules out most accidental matches.
        let endRecordSize = 22
        var endOffset: Int?
        if bytes.count >= endRecordSize {
            let lowest = max(0, bytes.count - endRecordSize - 65_535)
            for candidate in stride(from: bytes.count - endRecordSize, through: lowest, by: -1)
            where bytes.uint32(at: candidate) == Self.endOfCentralDirectorySignature
                && candidate + endRecordSize + Int(bytes.uint16(at: candidate + 20)) <= bytes.count {
                endOffset = candidate
                break
            }
        }
        guard let end = endOffset else {
            throw fail(bytes.count, "expected a zip end-of-central-directory record (signature PK\\5\\6) in the "
                + "last \(min(bytes.count, endRecordSize + 65_535)) bytes, found none: the file ends at byte "
                + "\(bytes.count) before the archive's index (truncated? an interrupted download or copy)")
        }

        var diskNumber = Int(bytes.uint16(at: end + 4))
        var directoryDisk = Int(bytes.uint16(at: end + 6))
        var entryCount = Int(bytes.uint16(at: end + 10))
        var directorySize = Int(bytes.uint32(at: end + 12))
        var directoryOffset = Int(bytes.uint32(at: end + 16))

        // ZIP64: a locator just before the end record points at a 64-bit end record whose fields replace the
        // 16/32-bit ones (written when there are more than 65,535 entries or the directory lies beyond 4 GB).
        let locator = end - 20
        if locator >= 0 && bytes.uint32(at: locator) == Self.zip64LocatorSignature {
            let record = Int(clamping: bytes.uint64(at: locator + 8))
            guard record >= 0, record + 56 <= locator else {
                throw fail(locator + 8, "expected the ZIP64 end record's offset (below byte \(locator)), found \(record)")
            }
            guard bytes.uint32(at: record) == Self.zip64EndSignature else {
                throw fail(record, "expected the ZIP64 end-of-central-directory record (signature PK\\6\\6) "
                    + "where the ZIP64 locator at byte \(locator) points, found other bytes")
            }
            diskNumber = Int(bytes.uint32(at: record + 16))
            directoryDisk = Int(bytes.uint32(at: record + 20))
            entryCount = Int(clamping: bytes.uint64(at: record + 32))
            directorySize = Int(clamping: bytes.uint64(at: record + 40))
            directoryOffset = Int(clamping: bytes.uint64(at: record + 48))
        }
        guard diskNumber == 0 && directoryDisk == 0 else {
            throw fail(end + 4, "this is one part of a multi-part (spanned) zip archive; expected a single-file "
                + "archive as np.savez writes")
        }
        guard directoryOffset <= end, directorySize <= end - directoryOffset else {
            throw fail(end + 12, "the end record places the central directory at bytes \(directoryOffset) to "
                + "\(directoryOffset + directorySize), expected it before the end record at byte \(end) "
                + "(truncated or corrupt archive?)")
        }

        var entries: [Entry] = []
        var position = directoryOffset
        for index in 0..<entryCount {
            guard position + 46 <= end, bytes.uint32(at: position) == Self.centralHeaderSignature else {
                throw fail(position, "expected central directory record \(index + 1) of \(entryCount) "
                    + "(signature PK\\1\\2), found other bytes (corrupt archive?)")
            }
            let flags = bytes.uint16(at: position + 8)
            let method = bytes.uint16(at: position + 10)
            let crc = bytes.uint32(at: position + 16)
            var compressedSize = Int(bytes.uint32(at: position + 20))
            var uncompressedSize = Int(bytes.uint32(at: position + 24))
            let nameLength = Int(bytes.uint16(at: position + 28))
            let extraLength = Int(bytes.uint16(at: position + 30))
            let commentLength = Int(bytes.uint16(at: position + 32))
            var localHeaderOffset = Int(bytes.uint32(at: position + 42))
            let nameStart = position + 46
            let extraStart = nameStart + nameLength
            let next = extraStart + extraLength + commentLength
            guard next <= end else {
                throw fail(position, "central directory record \(index + 1) runs to byte \(next), past the end "
                    + "record at byte \(end) (corrupt archive?)")
            }
            // Flag bit 11 says UTF-8; otherwise CP437, which is the same as ASCII for the names numpy writes.
            let name = String(decoding: bytes[nameStart..<extraStart], as: UTF8.self)

            // A ZIP64 extra field (header ID 1) holds, in this order, exactly those of uncompressed size,
            // compressed size and local header offset whose 32-bit field above is 0xFFFFFFFF.
            var extra = extraStart
            while extra + 4 <= extraStart + extraLength {
                let id = bytes.uint16(at: extra)
                let size = Int(bytes.uint16(at: extra + 2))
                let dataStart = extra + 4
                guard dataStart + size <= extraStart + extraLength else {
                    throw fail(extra, "entry '\(name)': extra field \(id) of \(size) bytes overruns the record's "
                        + "\(extraLength)-byte extra area (corrupt archive?)")
                }
                if id == 1 {
                    var field = dataStart
                    func take(_ value: inout Int, _ what: String) throws {
                        guard value == 0xFFFF_FFFF else { return }
                        guard field + 8 <= dataStart + size else {
                            throw fail(field, "entry '\(name)': expected the 64-bit \(what) in its ZIP64 extra "
                                + "field, the field has only \(size) bytes")
                        }
                        value = Int(clamping: bytes.uint64(at: field))
                        field += 8
                    }
                    try take(&uncompressedSize, "uncompressed size")
                    try take(&compressedSize, "compressed size")
                    try take(&localHeaderOffset, "local header offset")
                }
                extra = dataStart + size
            }

            entries.append(Entry(name: name, method: method, flags: flags, crc32: crc,
                                 compressedSize: compressedSize, uncompressedSize: uncompressedSize,
                                 localHeaderOffset: localHeaderOffset, recordOffset: position))
            position = next
        }
        self.entries = entries
    }

    /// The entry's uncompressed bytes, checked against its CRC-32. Stored entries are a slice of the archive
    /// (no copy: a large uncompressed .npz is not held twice).
    func contents(of entry: Entry) throws -> ArraySlice<UInt8> {
        func fail(_ offset: Int, _ problem: String) -> DatasetError {
            .malformedFile(path: path, byteOffset: offset, problem: "entry '\(entry.name)': " + problem)
        }
        guard entry.flags & 1 == 0 else {
            throw fail(entry.recordOffset + 8, "is encrypted; expected an unencrypted archive as np.savez writes")
        }
        let header = entry.localHeaderOffset
        guard header <= bytes.count - 30, bytes.uint32(at: header) == Self.localHeaderSignature else {
            throw fail(header, "expected its local file header (signature PK\\3\\4) at byte \(header), where the "
                + "central directory says it is; found " + (header > bytes.count - 30 ? "the end of the file" : "other bytes")
                + " (corrupt archive?)")
        }
        // The local header's own name and extra lengths decide where the data starts; they may differ from the
        // central directory's (numpy's local headers carry a ZIP64 extra field that the central records lack).
        let dataStart = header + 30 + Int(bytes.uint16(at: header + 26)) + Int(bytes.uint16(at: header + 28))
        guard dataStart <= bytes.count, entry.compressedSize <= bytes.count - dataStart else {
            throw fail(bytes.count, "expected \(entry.compressedSize) bytes of data from byte \(dataStart), "
                + "the file ends at byte \(bytes.count) (truncated?)")
        }
        let compressed = bytes[dataStart..<dataStart + entry.compressedSize]

        let data: ArraySlice<UInt8>
        switch entry.method {
        case 0:
            guard entry.compressedSize == entry.uncompressedSize else {
                throw fail(entry.recordOffset + 20, "is stored (uncompressed) but its sizes differ: "
                    + "\(entry.compressedSize) stored bytes, \(entry.uncompressedSize) declared (corrupt archive?)")
            }
            data = compressed
        case 8:
            data = try inflateRaw(compressed, entry: entry, dataStart: dataStart)[...]
        default:
            let names: [UInt16: String] = [1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "LZMA",
                                           93: "zstd", 95: "xz", 98: "PPMd"]
            let known = names[entry.method].map { " (\($0))" } ?? ""
            throw fail(entry.recordOffset + 10, "unknown compression method \(entry.method)\(known): expected 0 "
                + "(stored, as np.savez writes) or 8 (deflate, as np.savez_compressed writes)")
        }

        let actual = Self.crc32(of: data)
        guard actual == entry.crc32 else {
            throw fail(dataStart, "CRC-32 mismatch: the central directory records "
                + String(format: "0x%08x", entry.crc32) + ", the extracted data gives " + String(format: "0x%08x", actual)
                + " (the file is corrupt)")
        }
        return data
    }

    /// zlib's CRC-32, fed in chunks because its length argument is 32-bit.
    static func crc32(of data: ArraySlice<UInt8>) -> UInt32 {
        data.withUnsafeBufferPointer { buffer -> UInt32 in
            var crc = CZlib.crc32(0, nil, 0)
            var offset = 0
            while offset < buffer.count {
                let chunk = min(buffer.count - offset, 1 << 30)
                crc = CZlib.crc32(crc, buffer.baseAddress! + offset, uInt(chunk))
                offset += chunk
            }
            return UInt32(truncatingIfNeeded: crc)
        }
    }

    /// Decompresses a raw deflate stream (zip entries carry no zlib or gzip wrapper, hence -15 window bits) into
    /// exactly the declared size. One byte of spare room lets an over-long stream show itself instead of being
    /// silently cut.
    private func inflateRaw(_ input: ArraySlice<UInt8>, entry: Entry, dataStart: Int) throws -> [UInt8] {
        func fail(_ offset: Int, _ problem: String) -> DatasetError {
            .malformedFile(path: path, byteOffset: offset, problem: "entry '\(entry.name)': " + problem)
        }
        // Deflate cannot compress better than about 1032:1; a larger claim is corruption, and believing it would
        // try to allocate whatever a damaged size field says.
        guard entry.uncompressedSize / 1032 <= entry.compressedSize + 1 else {
            throw fail(entry.recordOffset + 24, "declares \(entry.uncompressedSize) uncompressed bytes from only "
                + "\(entry.compressedSize) compressed ones, more than deflate can achieve (corrupt archive?)")
        }
        guard !input.isEmpty else {
            throw fail(dataStart, "is deflate-compressed but has no compressed bytes (even empty data takes 2)")
        }
        var stream = z_stream()
        guard inflateInit2_(&stream, -15, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DatasetError.unreadableFile(path: path, reason: "zlib could not initialise (out of memory?)")
        }
        defer { inflateEnd(&stream) }

        var output = [UInt8](repeating: 0, count: entry.uncompressedSize + 1)
        let produced: Int = try input.withUnsafeBufferPointer { inputBuffer in
            try output.withUnsafeMutableBufferPointer { outputBuffer in
                let inputBase = UnsafeMutablePointer(mutating: inputBuffer.baseAddress!)
                let outputBase = outputBuffer.baseAddress!
                stream.next_in = inputBase
                stream.avail_in = 0
                stream.next_out = outputBase
                stream.avail_out = 0
                // avail_in and avail_out are 32-bit while entries may not be: hand zlib at most 1 GB at a time.
                while true {
                    let consumed = stream.next_in - inputBase
                    let written = stream.next_out - outputBase
                    if stream.avail_in == 0 && consumed < inputBuffer.count {
                        stream.avail_in = uInt(min(inputBuffer.count - consumed, 1 << 30))
                    }
                    if stream.avail_out == 0 && written < outputBuffer.count {
                        stream.avail_out = uInt(min(outputBuffer.count - written, 1 << 30))
                    }
                    let status = CZlib.inflate(&stream, Z_NO_FLUSH)
                    let nowConsumed = stream.next_in - inputBase
                    let nowWritten = stream.next_out - outputBase
                    switch status {
                    case Z_STREAM_END:
                        return nowWritten
                    case Z_OK:
                        continue
                    case Z_BUF_ERROR where stream.avail_in == 0 && nowConsumed == inputBuffer.count:
                        throw fail(dataStart + nowConsumed, "the deflate stream ends early: expected "
                            + "\(entry.uncompressedSize) bytes, got \(nowWritten) from all \(inputBuffer.count) "
                            + "compressed bytes (truncated or corrupt entry?)")
                    case Z_BUF_ERROR where stream.avail_out == 0 && nowWritten == outputBuffer.count:
                        throw fail(dataStart + nowConsumed, "decompresses to more than the \(entry.uncompressedSize) "
                            + "bytes the central directory declares (corrupt archive?)")
                    case Z_DATA_ERROR:
                        let message = stream.msg.map { String(cString: $0) } ?? "invalid data"
                        throw fail(dataStart + nowConsumed, "corrupt deflate data (zlib: \(message))")
                    case Z_MEM_ERROR:
                        throw DatasetError.unreadableFile(path: path, reason: "zlib ran out of memory decompressing '\(entry.name)'")
                    default:
                        throw fail(dataStart + nowConsumed, "zlib inflate failed with status \(status)")
                    }
                }
            }
        }
        guard produced == entry.uncompressedSize else {
            throw fail(dataStart, "decompresses to \(produced) bytes, the central directory declares "
                + "\(entry.uncompressedSize) (corrupt archive?)")
        }
        output.removeLast()
        return output
    }
}

fileprivate extension [UInt8] {
    /// Little-endian fixed-width reads. Callers check bounds first; these trap on a bug rather than misread.
    func uint16(at offset: Int) -> UInt16 {
        UInt16(self[offset]) | UInt16(self[offset + 1]) << 8
    }

    func uint32(at offset: Int) -> UInt32 {
        UInt32(uint16(at: offset)) | UInt32(uint16(at: offset + 2)) << 16
    }

    func uint64(at offset: Int) -> UInt64 {
        UInt64(uint32(at: offset)) | UInt64(uint32(at: offset + 4)) << 32
    }
}
