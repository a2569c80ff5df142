import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A file that says "this process holds it": created exclusively (`O_CREAT | O_EXCL`, atomic on local filesystems
/// and on NFS v3 and later, unlike `flock`), holding `host pid`, and touched every `heartbeat` seconds while held. A
/// holder that died leaves its file behind; it counts as gone when its process no longer exists (same host) or its
/// file has not been touched for `staleAfter` seconds (any host). Stage-key locks and active-run markers are these.
public final class HolderFile: @unchecked Sendable {
    public let url: URL
    private let timer: DispatchSourceTimer
    private var released = false
    private let lock = NSLock()

    public static let heartbeat: TimeInterval = 20
    public static let staleAfter: TimeInterval = 120

    /// This process's identity as written into holder files.
    public static var identity: (host: String, pid: Int32) {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        return (String(cString: name), getpid())
    }

    /// Creates `url` if no live holder has it; nil when one does. A dead holder's file is removed and retried once.
    public static func tryAcquire(_ url: URL) throws -> HolderFile? {
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        for attempt in 0..<2 {
            let descriptor = open(url.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if descriptor >= 0 {
                let me = identity
                let text = "\(me.host) \(me.pid)\n"
                _ = text.withCString { write(descriptor, $0, strlen($0)) }
                close(descriptor)
                return HolderFile(url: url)
            }
            guard errno == EEXIST else {
                throw StageFailure("cannot create \(url.path): \(String(cString: strerror(errno)))")
            }
            guard attempt == 0, !isHeld(url) else { return nil }
            try? FileManager.default.removeItem(at: url)
        }
        return nil
    }

    /// Waits (polling every `poll` seconds) until the file can be taken; `onWait` is called once with its holder.
    public static func acquire(_ url: URL, poll: TimeInterval = 0.5, onWait: (String) -> Void) throws -> HolderFile {
        var told = false
        while true {
            if let held = try tryAcquire(url) { return held }
            if !told { told = true; onWait(holder(of: url) ?? "?") }
            Thread.sleep(forTimeInterval: poll)
        }
    }

    /// True while a live process holds `url`.
    public static func isHeld(_ url: URL) -> Bool {
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: url.path) else { return false }
        let touched = (attributes[.modificationDate] as? Date) ?? .distantPast
        if Date().timeIntervalSince(touched) > staleAfter { return false }
        guard let text = holder(of: url) else { return true }  // being written this instant
        let fields = text.split(separator: " ")
        if fields.count == 2, String(fields[0]) == identity.host, let pid = Int32(fields[1]) {
            return kill(pid, 0) == 0 || errno == EPERM
        }
        return true
    }

    /// "host pid" of the holder, or nil.
    public static func holder(of url: URL) -> String? {
        (try? String(contentsOf: url, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private init(url: URL) {
        self.url = url
        timer = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        timer.schedule(deadline: .now() + Self.heartbeat, repeating: Self.heartbeat)
        timer.setEventHandler { [url] in
            try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: url.path)
        }
        timer.resume()
    }

    /// Stops the heartbeat and removes the file.
    public func release() {
        lock.lock(); defer { lock.unlock() }
        guard !released else { return }
        released = true
        timer.cancel()
        try? FileManager.default.removeItem(at: url)
    }

    deinit { release() }
}
