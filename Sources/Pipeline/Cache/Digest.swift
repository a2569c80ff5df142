import Foundation
import Crypto

/// SHA-256 helpers. Digests are lowercase hex.
public enum Digest {
    public static func of(_ data: Data) -> String {
        hex(SHA256.hash(data: data))
    }

    public static func of(_ string: String) -> String { of(Data(string.utf8)) }

    /// Streams the file in 1 MiB chunks so large models are not read into memory whole.
    public static func ofFile(at url: URL) throws -> String {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty {
            hasher.update(data: chunk)
        }
        return hex(hasher.finalize())
    }

    private static func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 {
        digest.map { String(format: "%02x", $0) }.joined()
    }
}
