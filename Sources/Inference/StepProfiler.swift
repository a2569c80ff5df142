import Foundation

/// Wall time per kind of step (`ExecutionStep.label`), switched on with `QATFLOW_PROFILE=1`; the table goes to
/// stderr when the executor is released. Measures, so that kernel work goes where the time actually is.
final class StepProfiler: @unchecked Sendable {
    // `@unchecked Sendable` is sound: all mutable state is guarded by `lock`.
    private let lock = NSLock()
    private var nanoseconds: [String: UInt64] = [:]
    private var calls: [String: Int] = [:]
    private var runs = 0

    static var isRequested: Bool { ProcessInfo.processInfo.environment["QATFLOW_PROFILE"].map { $0 != "0" && !$0.isEmpty } ?? false }

    func record(_ label: String, nanoseconds elapsed: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        nanoseconds[label, default: 0] += elapsed
        calls[label, default: 0] += 1
    }

    func finishRun() {
        lock.lock()
        defer { lock.unlock() }
        runs += 1
    }

    /// One line per label, most expensive first: total ms per run, share, calls per run.
    func report() -> String {
        lock.lock()
        defer { lock.unlock() }
        let total = nanoseconds.values.reduce(0, +)
        guard total > 0, runs > 0 else { return "profile: no runs\n" }
        var text = String(format: "profile over %d runs: %.3f ms per run in operators\n", runs, Double(total) / 1e6 / Double(runs))
        for (label, time) in nanoseconds.sorted(by: { $0.value > $1.value }) {
            text += String(format: "  %-40@ %9.3f ms/run %6.1f %%  %4d calls/run\n", label as NSString,
                           Double(time) / 1e6 / Double(runs), 100 * Double(time) / Double(total), calls[label]! / runs)
        }
        return text
    }
}
