import Quantization

/// The `target` parameter that `quantize` and `qat` share: where the model will run (`DeploymentTarget`).
enum DeploymentTargetParameter {
    static let spec = ParameterSpec(
        "target", .choice(DeploymentTarget.allCases.map(\.rawValue)), default: .string(DeploymentTarget.qatflow.rawValue),
        help: "where the model will run: qatflow (weights in the bits asked for), or onnxruntime-x86 (weights of layers with 8-bit inputs in at most 7 bits, so ONNX Runtime computes the ONNX QDQ export exactly on x86 CPUs without VNNI too)")

    static func target(_ context: StageContext) throws -> DeploymentTarget {
        let name = try context.string("target")
        guard let target = DeploymentTarget(rawValue: name) else {
            throw StageFailure("stage '\(context.stageID)': unknown target '\(name)'; expected \(DeploymentTarget.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return target
    }

    /// An explicit `weight_bits` the target would have to lower is a contradiction, refused before anything runs
    /// (`bits` alone is lowered as documented).
    static func problems(_ parameters: [String: JSONValue]) -> [ParameterProblem] {
        guard let target = parameters["target"]?.stringValue.flatMap(DeploymentTarget.init(rawValue:)),
              let weightBits = parameters["weight_bits"]?.intValue else { return [] }
        let activationBits = parameters["activation_bits"]?.intValue ?? parameters["bits"]?.intValue ?? 8
        return target.conflict(weightBits: weightBits, activationBits: activationBits).map { [ParameterProblem("weight_bits", $0)] } ?? []
    }

    /// Bits of weights and activations a `quantize` or `qat` stage's parameters give (defaults: 8 and the target `qatflow`).
    static func bits(_ parameters: [String: JSONValue]) -> (weight: Int, activation: Int) {
        let bits = parameters["bits"]?.intValue ?? 8
        let activation = parameters["activation_bits"]?.intValue ?? bits
        let target = parameters["target"]?.stringValue.flatMap(DeploymentTarget.init(rawValue:)) ?? .qatflow
        return (target.weightBits(requested: parameters["weight_bits"]?.intValue ?? bits, inputActivationBits: activation), activation)
    }
}
