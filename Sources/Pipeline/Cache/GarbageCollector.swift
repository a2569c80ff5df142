import Foundation

/// `qatflow gc`: deletes objects that no stage record references, under the run lock.
public struct GarbageCollector {
    public let store: ArtifactStore

    public init(store: ArtifactStore) { self.store = store }

    public struct Result {
        public var removedObjects = 0, removedBytes = 0, keptObjects = 0, keptBytes = 0
    }

    public func collect(dryRun: Bool = false) throws -> Result {
        try store.prepare()
        let lock = try FileLock(url: store.lockFile, onWait: { FileHandle.standardError.write(Data(($0 + "\n").utf8)) })
        defer { lock.unlock() }
        if !dryRun { try store.clearTemporaryFiles() }
        let referenced = Set(store.allRecords().flatMap { $0.outputs.values.map(\.digest) })
        var result = Result()
        let fm = FileManager.default
        for prefix in (try? fm.contentsOfDirectory(atPath: store.objectsDirectory.path)) ?? [] {
            let directory = store.objectsDirectory.appendingPathComponent(prefix)
            for name in (try? fm.contentsOfDirectory(atPath: directory.path)) ?? [] {
                let url = directory.appendingPathComponent(name)
                let size = (try? fm.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
                if referenced.contains(name) {
                    result.keptObjects += 1
                    result.keptBytes += size
                } else {
                    if !dryRun { try fm.removeItem(at: url) }
                    result.removedObjects += 1
                    result.removedBytes += size
                }
            }
        }
        return result
    }
}
