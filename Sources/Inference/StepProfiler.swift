import Foundation

/// Time per kind of step (`ExecutionStep.label`), switched on with `QATFLOW_PROFILE=1`; the table goes to stderr
/// when the executor is released. Records wall time and the calling thread's CPU time: on a shared, loaded machine
/// the CPU time of a 1-thread run is the stable number (wall time includes preemption).
final class StepProfiler: @unchecked Sendable {
    // `@unchecked Sendable` is sound: all mutable state is guarded by `lock`.
    private let lock = NSLock()
    private var nanoseconds: [String: UInt64] = [:]
    private var cpuNanoseconds: [String: UInt64] = [:]
    private var calls: [String: Int] = [:]
    private var runs = 0

    static var isRequested: Bool { ProcessInfo.processInfo.environment["QATFLOW_PROFILE"].map { $0 != "0" && !$0.isEmpty } ?? false }

    /// CPU time of the calling thread.
    static func threadCPUNanoseconds() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    func record(_ label: String, nanoseconds elapsed: UInt64, cpuNanoseconds cpu: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        nanoseconds[label, default: 0] += elapsed
        cpuNanoseconds[label, default: 0] += cpu
        calls[label, default: 0] += 1
    }

    func finishRun() {
        lock.lock()
        defer { lock.unlock() }
        runs += 1
    }

    /// One line per label, most expensive first: wall ms per run, share, calling-thread CPU ms per run, calls per run.
    func report() -> String {
        lock.lock()
        defer { lock.unlock() }
        let total = nanoseconds.values.reduce(0, +), totalCPU = cpuNanoseconds.values.reduce(0, +)
        guard total > 0, runs > 0 else { return "profile: no runs\n" }
        var text = String(format: "profile over %d runs: %.3f ms wall, %.3f ms CPU (calling thread) per run in operators\n",
                          runs, Double(total) / 1e6 / Double(runs), Double(totalCPU) / 1e6 / Double(runs))
        for (label, cpu) in cpuNanoseconds.sorted(by: { $0.value > $1.value }) {
            let padded = label.padding(toLength: 36, withPad: " ", startingAt: 0)
            text += padded + String(format: " wall %8.3f ms/run  CPU %8.3f ms/run %6.1f %%  %3d calls/run\n",
                                    Double(nanoseconds[label]!) / 1e6 / Double(runs), Double(cpu) / 1e6 / Double(runs),
                                    100 * Double(cpu) / Double(max(totalCPU, 1)), calls[label]! / runs)
        }
        return text
    }
}
