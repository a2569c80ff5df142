import Foundation
import Kernels
import Tensor

/// The CPU a stage's results came from and the kernel paths it took. The same key gives slightly different numbers
/// on different CPUs (other summation orders in other kernels, and ONNX Runtime's int8 differs by ISA), so every
/// stage record, run record, report and model card says where its numbers were made.
public struct MachineRecord: Codable, Sendable, Equatable, CustomStringConvertible {
    public let cpu: String
    public let int8Kernels: String
    public let fp32Kernels: String
    public let cores: Int

    public static let current = MachineRecord(cpu: MachineDescription.cpuModel, int8Kernels: KernelISA.best.rawValue,
                                              fp32Kernels: FP32InstructionSet.preferred.description,
                                              cores: ProcessInfo.processInfo.activeProcessorCount)

    public var description: String { "\(cpu), \(cores) cores; int8 kernels \(int8Kernels), fp32 kernels \(fp32Kernels)" }

    public var json: JSONValue {
        .object(["cpu": .string(cpu), "int8_kernels": .string(int8Kernels), "fp32_kernels": .string(fp32Kernels), "cores": .int(cores)])
    }

    enum CodingKeys: String, CodingKey { case cpu, int8Kernels = "int8_kernels", fp32Kernels = "fp32_kernels", cores }
}
