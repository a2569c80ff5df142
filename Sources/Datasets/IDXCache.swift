import Foundation

/// Process-wide memory of decoded IDX files, because several pipeline stages load the same test set and
/// decompressing 47 MB of training images each time would dominate their run time.
///
/// Keyed by path plus size and modification time, so a dataset replaced on disk (e.g. by `make datasets`) is
/// decoded again rather than served stale. Decoding happens outside the lock: two threads that miss at the same
/// moment both decode, which is wasteful but harmless, and no thread ever waits behind another's decode.
final class IDXCache: @unchecked Sendable {  // all mutable state is guarded by `lock`
    static let shared = IDXCache()

    private struct Key: Hashable {
        let path: String
        let size: Int
        let modified: Date
    }

    private enum Entry {
        case images(IDXImages)
        case labels([Int])
    }

    private let lock = NSLock()
    private var entries: [Key: Entry] = [:]

    func images(_ url: URL) throws -> IDXImages {
        let key = try Self.key(for: url)
        if case let .images(images)? = lookUp(key) { return images }
        let images = try IDXReader.readImages(url)
        store(.images(images), for: key)
        return images
    }

    func labels(_ url: URL, classCount: Int) throws -> [Int] {
        let key = try Self.key(for: url)
        if case let .labels(labels)? = lookUp(key) {
            // Cached labels passed a range check that may have been for a different class count.
            if let bad = labels.firstIndex(where: { $0 >= classCount }) {
                throw DatasetError.malformedFile(
                    path: url.path, byteOffset: 8 + bad,
                    problem: "expected a class label in 0...\(classCount - 1), found \(labels[bad]) (label #\(bad))")
            }
            return labels
        }
        let labels = try IDXReader.readLabels(url, classCount: classCount)
        store(.labels(labels), for: key)
        return labels
    }

    func removeAll() {
        lock.lock()
        defer { lock.unlock() }
        entries.removeAll()
    }

    private func lookUp(_ key: Key) -> Entry? {
        lock.lock()
        defer { lock.unlock() }
        return entries[key]
    }

    private func store(_ entry: Entry, for key: Key) {
        lock.lock()
        defer { lock.unlock() }
        entries[key] = entry
    }

    private static func key(for url: URL) throws -> Key {
        let path = url.standardizedFileURL.path
        do {
            let attributes = try FileManager.default.attributesOfItem(atPath: path)
            let size = (attributes[.size] as? NSNumber)?.intValue ?? -1
            let modified = attributes[.modificationDate] as? Date ?? .distantPast
            return Key(path: path, size: size, modified: modified)
        } catch {
            throw DatasetError.unreadableFile(path: path, reason: error.localizedDescription)
        }
    }
}
