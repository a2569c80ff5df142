import CKernels
import Foundation
import Tensor

/// The instruction-set level a kernel runs at. Every `Kernels` operation has one implementation per level, all
/// computing bit-identical results; `best` is what this CPU supports, detected once at run time (the C target is
/// built without global ISA flags, so the same binary runs on a CPU without AVX-512 or AVX2).
public enum KernelISA: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Plain C, any CPU.
    case portable
    /// AVX2 (x86-64-v3).
    case avx2
    /// AVX-512 F/BW/VL + VNNI: the GEMM uses `vpdpbusd` (64 u8·s8 multiply-adds per instruction).
    case avx512vnni

    /// Whether this CPU can execute the level.
    public var isSupported: Bool {
        switch self {
        case .portable: return true
        case .avx2: return KernelISA.cpuHasAVX2
        case .avx512vnni: return KernelISA.cpuHasAVX512VNNI
        }
    }

    /// The fastest level this CPU supports.
    public static let best: KernelISA = allCases.last(where: \.isSupported) ?? .portable

    /// Every level this CPU supports, slowest first.
    public static var supported: [KernelISA] { allCases.filter(\.isSupported) }

    public var description: String { rawValue }

    private static let cpuHasAVX2 = qf_cpu_has_avx2() != 0
    private static let cpuHasAVX512VNNI = qf_cpu_has_avx512vnni() != 0

    /// Traps with a clear message instead of letting the CPU raise an illegal instruction.
    func requireSupported() {
        precondition(isSupported, "kernel ISA \(rawValue) is not supported by this CPU")
    }
}

/// The CPU this process runs on and the kernel paths it takes, for every printed speed number (a number without
/// its CPU cannot be compared: the same binary takes the AVX-512 VNNI, AVX2 or portable path by CPU).
public enum MachineDescription {
    /// The CPU's model name from /proc/cpuinfo ("unknown CPU" elsewhere).
    public static let cpuModel: String = {
        guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
              let colon = line.firstIndex(of: ":") else { return "unknown CPU" }
        return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }()

    /// "int8 kernels avx512vnni, fp32 kernels avx512" (what this process runs).
    public static var kernelPaths: String {
        "int8 kernels \(KernelISA.best), fp32 kernels \(FP32InstructionSet.preferred)"
    }

    /// One line: the CPU and the kernel paths.
    public static var summary: String { "\(cpuModel); \(kernelPaths)" }
}
