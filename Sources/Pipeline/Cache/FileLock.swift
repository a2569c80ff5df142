import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An exclusive advisory lock (`flock`) on a file, held until `unlock()` or process exit — so a killed run
/// never leaves a stale lock behind. Two `qatflow run` on one cache take turns.
public final class FileLock {
    private let descriptor: Int32
    public let url: URL

    /// Takes the lock, waiting for another holder; `onWait` is called once if the lock is busy.
    public init(url: URL, onWait: (String) -> Void) throws {
        self.url = url
        descriptor = open(url.path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw StageFailure("cannot open lock file \(url.path): \(String(cString: strerror(errno)))")
        }
        if flock(descriptor, LOCK_EX | LOCK_NB) != 0 {
            let holder = (try? String(contentsOf: url, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            onWait("waiting for another qatflow run on this cache (pid \(holder.isEmpty ? "?" : holder)) to finish ...")
            guard flock(descriptor, LOCK_EX) == 0 else {
                close(descriptor)
                throw StageFailure("cannot lock \(url.path): \(String(cString: strerror(errno)))")
            }
        }
        let pid = "\(getpid())\n"
        _ = ftruncate(descriptor, 0)
        _ = pid.withCString { pwrite(descriptor, $0, strlen($0), 0) }
    }

    public func unlock() {
        flock(descriptor, LOCK_UN)
        close(descriptor)
    }
}
