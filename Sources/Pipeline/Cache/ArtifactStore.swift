import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A stored artifact: content digest, size, and the file name the stage gave it (kept so restored outputs and
/// downstream stages see a meaningful extension).
public struct ArtifactReference: Codable, Sendable, Equatable {
    public let digest: String
    public let size: Int
    public let fileName: String
}

/// What a finished stage left behind: enough to skip it next time and hand its outputs to dependents.
public struct StageRecord: Codable, Sendable {
    public let key: String
    public let kind: String
    public let instance: String
    public let parameters: [String: JSONValue]
    /// Upstream instance → artifact name → digest, as used for the key.
    public let inputs: [String: [String: String]]
    public let outputs: [String: ArtifactReference]
    public let metrics: [String: JSONValue]
    public let created: String
    public let seconds: Double
    public let engineVersion: String
    /// Where the outputs were computed (nil in records written before qatflow recorded it).
    public var machine: MachineRecord? = nil
}

/// The content-addressed cache under `.qatflow/`:
/// `cache/objects/ab/abcdef…` (artifacts by SHA-256), `cache/stages/<key>.json` (stage records),
/// `cache/checkpoints/<key>/` (a long stage's checkpoints, kept across killed runs until its record exists),
/// `tmp/` (work in progress; a dead process's leftovers are removed when a run starts), `runs/<id>/` (run records),
/// `locks/<key>` (a stage key being computed, see `HolderFile`), `active/` (one marker per running run, which
/// keeps `gc` away) and `gc.lock`. Several runs, on one machine or on many sharing the folder (NFS), may use it at once.
/// Every write goes to a temporary file first and is renamed into place, so a killed process leaves no
/// half-written object or record; a record is written only after all its objects are in place.
public struct ArtifactStore: Sendable {
    public let root: URL

    public init(root: URL) { self.root = root }

    public var objectsDirectory: URL { root.appendingPathComponent("cache/objects") }
    public var recordsDirectory: URL { root.appendingPathComponent("cache/stages") }
    public var temporaryDirectory: URL { root.appendingPathComponent("tmp") }
    public var runsDirectory: URL { root.appendingPathComponent("runs") }
    public var locksDirectory: URL { root.appendingPathComponent("locks") }
    public var activeRunsDirectory: URL { root.appendingPathComponent("active") }
    public var garbageCollectionLock: URL { root.appendingPathComponent("gc.lock") }

    /// The lock file of stage key `key`.
    public func keyLockFile(_ key: String) -> URL { locksDirectory.appendingPathComponent(key) }

    /// Marks a run as using the cache until `release()`; waits while `gc` runs. The marker is created before
    /// `gc.lock` is checked, and `gc` takes its lock before it checks the markers, so one of the two always waits.
    public func markActiveRun() throws -> HolderFile {
        let me = HolderFile.identity
        guard let marker = try HolderFile.tryAcquire(activeRunsDirectory.appendingPathComponent("\(me.host)-\(me.pid)-\(UUID().uuidString.prefix(8))")) else {
            throw StageFailure("cannot create a run marker in \(activeRunsDirectory.path)")
        }
        var told = false
        while HolderFile.isHeld(garbageCollectionLock) {
            if !told { told = true; FileHandle.standardError.write(Data("waiting for qatflow gc (\(HolderFile.holder(of: garbageCollectionLock) ?? "?")) to finish ...\n".utf8)) }
            Thread.sleep(forTimeInterval: 0.5)
        }
        return marker
    }

    /// The holders of live run markers (other runs using the cache now).
    public func activeRuns() -> [String] {
        let markers = (try? FileManager.default.contentsOfDirectory(at: activeRunsDirectory, includingPropertiesForKeys: nil)) ?? []
        return markers.filter(HolderFile.isHeld).compactMap(HolderFile.holder(of:))
    }
    public var checkpointsDirectory: URL { root.appendingPathComponent("cache/checkpoints") }

    /// The checkpoint folder of the stage with `key`. Unlike `tmp/` it is not emptied when a run starts: a
    /// killed stage resumes from it. Created by the stage when it first saves.
    public func checkpointDirectory(forKey key: String) -> URL {
        checkpointsDirectory.appendingPathComponent(key)
    }

    /// Deletes the checkpoints of a stage whose record is stored (they can no longer be resumed from).
    public func removeCheckpoints(forKey key: String) {
        try? FileManager.default.removeItem(at: checkpointDirectory(forKey: key))
    }

    public func prepare() throws {
        for directory in [objectsDirectory, recordsDirectory, temporaryDirectory, runsDirectory] {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        }
    }

    /// Removes the scratch folders of processes that are gone: on this host, by process id; on any host, when
    /// untouched for a day. Folders of live runs (this one's neighbours) stay.
    public func clearAbandonedTemporaryFiles() {
        let fm = FileManager.default
        let me = HolderFile.identity
        for item in (try? fm.contentsOfDirectory(at: temporaryDirectory, includingPropertiesForKeys: [.contentModificationDateKey])) ?? [] {
            let fields = item.lastPathComponent.split(separator: "~", maxSplits: 2)
            let modified = (try? item.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate) ?? .distantPast
            let deadHere = fields.count == 3 && String(fields[0]) == me.host && Int32(fields[1]).map { kill($0, 0) != 0 && errno == ESRCH } == true
            if deadHere || Date().timeIntervalSince(modified) > 86_400 { try? fm.removeItem(at: item) }
        }
    }

    /// Removes everything in `tmp/`; only `gc`, which runs while no run is active, may.
    func clearTemporaryFiles() throws {
        let fm = FileManager.default
        for item in (try? fm.contentsOfDirectory(at: temporaryDirectory, includingPropertiesForKeys: nil)) ?? [] {
            try fm.removeItem(at: item)
        }
    }

    /// A new private directory inside `tmp/`, named `host~pid~prefix-xxxxxxxx` so that a later run can tell
    /// whether its owner is gone.
    public func makeScratchDirectory(prefix: String) throws -> URL {
        let safe = prefix.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "_" }
        let me = HolderFile.identity
        let url = temporaryDirectory.appendingPathComponent("\(me.host)~\(me.pid)~\(String(safe))-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    public func objectURL(_ digest: String) -> URL {
        objectsDirectory.appendingPathComponent(String(digest.prefix(2))).appendingPathComponent(digest)
    }

    /// Moves `file` into the object store under its digest (the file is consumed).
    public func storeObject(movingFrom file: URL) throws -> (digest: String, size: Int) {
        let digest = try Digest.ofFile(at: file)
        let size = (try FileManager.default.attributesOfItem(atPath: file.path)[.size] as? Int) ?? 0
        let destination = objectURL(digest)
        let fm = FileManager.default
        if fm.fileExists(atPath: destination.path) {
            try fm.removeItem(at: file)
        } else {
            try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
            try fm.setAttributes([.posixPermissions: 0o444], ofItemAtPath: file.path)
            try Self.rename(file, to: destination)
        }
        return (digest, size)
    }

    public func record(forKey key: String) -> StageRecord? {
        let url = recordsDirectory.appendingPathComponent("\(key).json")
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        return try? JSONDecoder().decode(StageRecord.self, from: data)
    }

    /// A record is usable only if every object it names is still present (a `gc` or a hand-deleted object
    /// turns a hit into a re-run instead of an error).
    public func usableRecord(forKey key: String) -> StageRecord? {
        guard let record = record(forKey: key) else { return nil }
        let fm = FileManager.default
        return record.outputs.values.allSatisfy { fm.fileExists(atPath: objectURL($0.digest).path) } ? record : nil
    }

    public func write(_ record: StageRecord) throws {
        try writeJSON(record, to: recordsDirectory.appendingPathComponent("\(record.key).json"))
    }

    public func allRecords() -> [StageRecord] {
        let files = (try? FileManager.default.contentsOfDirectory(at: recordsDirectory, includingPropertiesForKeys: nil)) ?? []
        return files.filter { $0.pathExtension == "json" }.compactMap { url in
            FileManager.default.contents(atPath: url.path).flatMap { try? JSONDecoder().decode(StageRecord.self, from: $0) }
        }
    }

    /// Encodes `value` as pretty, key-sorted JSON and writes it atomically.
    public func writeJSON<T: Encodable>(_ value: T, to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try Self.writeAtomically(try encoder.encode(value), to: url)
    }

    /// Writes next to the destination, then renames: readers see the old file or the new one, never a part.
    public static func writeAtomically(_ data: Data, to url: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(UUID().uuidString.prefix(8)).tmp")
        guard fm.createFile(atPath: temporary.path, contents: data) else {
            throw StageFailure("cannot write \(temporary.path)")
        }
        try rename(temporary, to: url)
    }

    /// Copies a file to `destination` through a temporary file in the destination's directory.
    public static func copyAtomically(_ source: URL, to destination: URL) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        let temporary = destination.deletingLastPathComponent().appendingPathComponent(".\(destination.lastPathComponent).\(UUID().uuidString.prefix(8)).tmp")
        try fm.copyItem(at: source, to: temporary)
        try fm.setAttributes([.posixPermissions: 0o644], ofItemAtPath: temporary.path)
        try rename(temporary, to: destination)
    }

    /// POSIX rename: atomic, replaces the destination.
    static func rename(_ source: URL, to destination: URL) throws {
        if Foundation.rename(source.path, destination.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: source)
            throw StageFailure("cannot move \(source.path) to \(destination.path): \(reason)")
        }
    }
}
