import Foundation

/// `qatflow gc`: deletes objects that no stage record references, and checkpoint folders of stages that have
/// a record (finished: nothing will resume from them), while no run uses the cache (it refuses while one does, and runs wait for it). Checkpoints of stages without a
/// record are kept: a re-run of that stage resumes from them.
public struct GarbageCollector {
    public let store: ArtifactStore

    public init(store: ArtifactStore) { self.store = store }

    public struct Result {
        public var removedObjects = 0, removedBytes = 0, keptObjects = 0, keptBytes = 0
        /// Checkpoint folders (and their bytes) removed, and those kept because their stage may resume.
        public var removedCheckpointFolders = 0, removedCheckpointBytes = 0, keptCheckpointFolders = 0
    }

    public func collect(dryRun: Bool = false) throws -> Result {
        try store.prepare()
        let lock = try HolderFile.acquire(store.garbageCollectionLock) { holder in
            FileHandle.standardError.write(Data("waiting for another qatflow gc (\(holder)) ...\n".utf8))
        }
        defer { lock.release() }
        // Objects a running stage has stored but not yet named in a record would look unreferenced.
        let active = store.activeRuns()
        guard active.isEmpty else {
            throw StageFailure("the cache is in use by \(active.count) run\(active.count == 1 ? "" : "s") (\(active.joined(separator: ", "))); run gc when they have finished")
        }
        if !dryRun { try store.clearTemporaryFiles() }
        let records = store.allRecords()
        let referenced = Set(records.flatMap { $0.outputs.values.map(\.digest) })
        var result = Result()
        let fm = FileManager.default
        let finishedKeys = Set(records.map(\.key))
        for key in (try? fm.contentsOfDirectory(atPath: store.checkpointsDirectory.path)) ?? [] {
            let folder = store.checkpointsDirectory.appendingPathComponent(key)
            let files = (try? fm.subpathsOfDirectory(atPath: folder.path)) ?? []
            guard finishedKeys.contains(key) || files.isEmpty else { result.keptCheckpointFolders += 1; continue }
            result.removedCheckpointFolders += 1
            result.removedCheckpointBytes += files.reduce(0) { total, file in
                total + ((try? fm.attributesOfItem(atPath: folder.appendingPathComponent(file).path)[.size] as? Int) ?? 0)
            }
            if !dryRun { try fm.removeItem(at: folder) }
        }
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
