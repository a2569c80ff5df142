import CKernels
import Foundation

/// The instruction-set path of the FP32 kernels (GEMM, depthwise convolution), chosen at run time.
///
/// The package is built for the baseline CPU; the AVX2 and AVX-512 kernels live in the C target `CKernels` behind
/// function-level target attributes and only run after the CPU said it has them, so no CPU ever sees an illegal
/// instruction. Tests force each supported path explicitly.
public enum FP32InstructionSet: Int32, CaseIterable, Sendable, CustomStringConvertible {
    /// Plain C vector code compiled for the build baseline (SSE2 on x86-64).
    case portable = 0
    /// AVX2 + FMA.
    case avx2 = 1
    /// AVX-512F + FMA.
    case avx512 = 2

    /// The fastest path this CPU supports.
    public static let best = FP32InstructionSet(rawValue: qf_fp32_best_isa()) ?? .portable

    /// What kernels use unless told otherwise: `best`, or the `QATFLOW_FP32_ISA` environment variable
    /// (`portable`, `avx2`, `avx512`) when set to a path this CPU supports — for comparing paths end to end.
    public static let preferred: FP32InstructionSet = {
        guard let name = ProcessInfo.processInfo.environment["QATFLOW_FP32_ISA"],
              let forced = allCases.first(where: { $0.description == name }), forced.isSupported else { return best }
        return forced
    }()

    /// True when this CPU can run the path.
    public var isSupported: Bool { qf_fp32_isa_supported(rawValue) != 0 }

    /// Every path this CPU can run (always includes `.portable`).
    public static var supported: [FP32InstructionSet] { allCases.filter(\.isSupported) }

    /// Rows of the GEMM micro-kernel's register tile (the panel height of `PackedMatrixA`).
    public var gemmRowTile: Int { Int(qf_fp32_gemm_row_tile(rawValue)) }
    /// Columns of the GEMM micro-kernel's register tile (the width of a packed B panel).
    public var gemmColumnTile: Int { Int(qf_fp32_gemm_column_tile(rawValue)) }

    public var description: String {
        switch self {
        case .portable: "portable"
        case .avx2: "avx2"
        case .avx512: "avx512"
        }
    }
}
