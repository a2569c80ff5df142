import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Progress of long work (training, calibration, evaluation): a single updating line with rate and ETA on a
/// terminal; silent when quiet, when stderr is not a terminal, or under CI (`CI` set).
public final class ProgressReporter: @unchecked Sendable {
    private let lock = NSLock()
    private let enabled: Bool
    private let prefix: String
    private var label = ""
    private var total = 0
    private var done = 0
    private var started = Date()
    private var lastDraw = Date.distantPast
    private var extra = ""

    /// - Parameter prefix: shown before every line, usually the stage id.
    public init(prefix: String, quiet: Bool) {
        self.prefix = prefix
        let environment = ProcessInfo.processInfo.environment
        self.enabled = !quiet && isatty(STDERR_FILENO) == 1 && environment["CI"] == nil
    }

    /// A reporter that never prints.
    public static func silent() -> ProgressReporter { ProgressReporter(prefix: "", quiet: true) }

    /// Begins a phase of `total` units (images, steps, batches).
    public func begin(_ label: String, total: Int) {
        lock.lock(); defer { lock.unlock() }
        self.label = label
        self.total = max(total, 1)
        self.done = 0
        self.extra = ""
        self.started = Date()
        self.lastDraw = .distantPast
    }

    /// Marks `units` more done; `status` (e.g. "loss 0.31") is shown after the counters.
    public func advance(by units: Int = 1, status: String? = nil) {
        lock.lock(); defer { lock.unlock() }
        done = min(done + units, total)
        if let status { extra = status }
        let now = Date()
        if enabled && (now.timeIntervalSince(lastDraw) > 0.2 || done == total) {
            lastDraw = now
            draw(now: now)
        }
    }

    /// Sets the absolute number of units done.
    public func advanceTo(_ units: Int) {
        lock.lock()
        let delta = units - done
        lock.unlock()
        if delta > 0 { advance(by: delta) }
    }

    /// Ends the phase and clears the line.
    public func finish() {
        lock.lock(); defer { lock.unlock() }
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }

    private func draw(now: Date) {
        let elapsed = now.timeIntervalSince(started)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let remaining = rate > 0 ? Double(total - done) / rate : 0
        let percent = 100 * done / total
        var line = "\r\u{1B}[K\(prefix) \(label) \(done)/\(total) (\(percent)%) \(String(format: "%.1f", rate))/s ETA \(Self.clock(remaining))"
        if !extra.isEmpty { line += " " + extra }
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
            : String(format: "%d:%02d", s / 60, s % 60)
    }
}
