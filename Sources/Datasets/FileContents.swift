import CZlib
import Foundation

/// The bytes of a file as its format defines them: gzip streams decompressed, anything else as stored.
///
/// A truncated gzip stream is not an error here on purpose: the format reader that consumes the bytes knows what
/// it expected at the cut and can say so ("expected 7,840,000 bytes of pixels, stream ends at byte 5,000"), which
/// is a far better message than zlib's. Corrupt compressed data, in contrast, is reported immediately.
struct FileContents {
    let path: String
    let bytes: [UInt8]
    let wasGzipped: Bool
    /// True when the gzip stream ended before its end marker and CRC trailer (file cut short).
    let gzipStreamTruncated: Bool

    /// A file's bytes as stored, mapped while they are copied (datasets reach GBs, so the file is not held twice);
    /// an unreadable file is `DatasetError.unreadableFile` naming it.
    static func rawBytes(_ url: URL) throws -> [UInt8] {
        do {
            return [UInt8](try Data(contentsOf: url, options: .mappedIfSafe))
        } catch {
            throw DatasetError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
    }

    static func read(_ url: URL) throws -> FileContents {
        let path = url.path
        let raw: Data
        do {
            raw = try Data(contentsOf: url)
        } catch {
            throw DatasetError.unreadableFile(path: path, reason: error.localizedDescription)
        }
        let isGzip = raw.count >= 2 && raw[raw.startIndex] == 0x1f && raw[raw.startIndex + 1] == 0x8b
        guard isGzip else {
            return FileContents(path: path, bytes: [UInt8](raw), wasGzipped: false, gzipStreamTruncated: false)
        }
        let (bytes, truncated) = try raw.withUnsafeBytes { compressed in
            try GzipInflater.inflate(compressed, path: path)
        }
        return FileContents(path: path, bytes: bytes, wasGzipped: true, gzipStreamTruncated: truncated)
    }

    /// A note appended to "file ends early" messages so the reader knows whether the cut came from gzip.
    var truncationHint: String {
        gzipStreamTruncated
            ? " (the gzip stream itself is truncated: the compressed file was cut short)"
            : " (file truncated?)"
    }
}

/// Decompresses a whole gzip file (possibly several concatenated members, as gzip(1) allows) with zlib.
enum GzipInflater {
    static func inflate(_ compressed: UnsafeRawBufferPointer, path: String) throws -> (bytes: [UInt8], truncated: Bool) {
        var output = [UInt8](repeating: 0, count: initialCapacity(for: compressed))
        var produced = 0
        var stream = z_stream()
        // 15 window bits + 16 = expect a gzip header and check its CRC32/length trailer.
        guard inflateInit2_(&stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw DatasetError.unreadableFile(path: path, reason: "zlib could not initialise (out of memory?)")
        }
        defer { inflateEnd(&stream) }

        let input = compressed.bindMemory(to: Bytef.self)
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
        stream.avail_in = 0
        var consumed = 0  // input bytes handed to zlib so far (avail_in is 32-bit, files may not be)

        while true {
            if stream.avail_in == 0 && consumed < input.count {
                let chunk = min(input.count - consumed, Int(UInt32.max))
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress! + consumed)
                stream.avail_in = UInt32(chunk)
                consumed += chunk
            }
            if produced == output.count {
                output.append(contentsOf: repeatElement(0, count: max(output.count, 1 << 16)))
            }
            let room = min(output.count - produced, Int(UInt32.max))
            let status = output.withUnsafeMutableBufferPointer { buffer -> Int32 in
                stream.next_out = buffer.baseAddress! + produced
                stream.avail_out = UInt32(room)
                return CZlib.inflate(&stream, Z_NO_FLUSH)
            }
            produced += room - Int(stream.avail_out)

            switch status {
            case Z_OK:
                continue
            case Z_STREAM_END:
                let remaining = Int(stream.avail_in) + (input.count - consumed)
                if remaining == 0 {
                    output.removeLast(output.count - produced)
                    return (output, false)
                }
                let next = input.count - remaining
                if remaining >= 2 && input[next] == 0x1f && input[next + 1] == 0x8b {
                    inflateReset(&stream)  // another gzip member follows; its output continues ours
                    continue
                }
                throw DatasetError.malformedFile(
                    path: path, byteOffset: produced,
                    problem: "expected end of file or another gzip member after the gzip stream, "
                        + "found \(remaining) bytes of trailing garbage (at compressed byte \(next))")
            case Z_BUF_ERROR where stream.avail_in == 0 && consumed == input.count:
                // No input left and the stream has not ended: the file was cut short.
                output.removeLast(output.count - produced)
                return (output, true)
            case Z_BUF_ERROR where stream.avail_out == 0:
                continue  // output buffer full; grown at the top of the loop
            case Z_BUF_ERROR:
                // Input and output room both left, yet no progress: never expected from zlib; fail, don't spin.
                throw DatasetError.malformedFile(
                    path: path, byteOffset: produced, problem: "zlib inflate made no progress (corrupt gzip data?)")
            case Z_DATA_ERROR:
                let zlibMessage = stream.msg.map { String(cString: $0) } ?? "invalid data"
                throw DatasetError.malformedFile(
                    path: path, byteOffset: produced,
                    problem: "corrupt gzip data (zlib: \(zlibMessage)); expected a valid deflate stream "
                        + "(decompressed offset given; compressed input consumed so far: "
                        + "\(consumed - Int(stream.avail_in)) bytes)")
            case Z_MEM_ERROR:
                throw DatasetError.unreadableFile(path: path, reason: "zlib ran out of memory while decompressing")
            default:
                throw DatasetError.malformedFile(
                    path: path, byteOffset: produced, problem: "zlib inflate failed with status \(status)")
            }
        }
    }

    /// gzip stores the uncompressed size modulo 2^32 in its last four bytes; using it avoids regrowing a 47 MB
    /// buffer. It is only a hint (it may be wrong for truncated or multi-member files), so it is clamped.
    private static func initialCapacity(for compressed: UnsafeRawBufferPointer) -> Int {
        let fallback = max(compressed.count * 4, 1 << 16)
        guard compressed.count >= 18 else { return fallback }
        let tail = compressed.count - 4
        let declared = Int(compressed[tail]) | Int(compressed[tail + 1]) << 8
            | Int(compressed[tail + 2]) << 16 | Int(compressed[tail + 3]) << 24
        // A cut-off file ends in arbitrary bytes, so trust the hint only up to a ratio real image data never
        // reaches; more extreme (or mis-hinted) streams simply grow the buffer as they go.
        guard declared > 0 else { return fallback }
        return min(declared, max(compressed.count * 16, 1 << 16))
    }
}
