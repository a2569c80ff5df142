import Tensor

/// What a parameter is for; optimizers use it to leave normalisation and bias terms out of weight decay when
/// asked to, and export uses it to know which initializer it came from.
public enum ParameterRole: String, Sendable {
    case weight, bias, normalizationScale, normalizationShift
    /// A learned quantization scale or zero point (QAT with LSQ); never weight-decayed by `weightsOnly`.
    case quantizationRange
}

/// A trainable tensor named after the graph initializer it was read from (and is written back to).
public final class Parameter {
    public let name: String
    public let role: ParameterRole
    public let variable: Variable
    /// Multiplies the optimizer's learning rate for this parameter (PyTorch's per-group `lr`): QAT gives its
    /// learned quantization scales their own rate this way.
    public var learningRateMultiplier: Float = 1

    public init(name: String, role: ParameterRole, value: Tensor) {
        self.name = name
        self.role = role
        self.variable = Variable(value, requiresGradient: true)
    }

    public var value: Tensor {
        get { variable.value }
        set {
            precondition(newValue.shape == variable.value.shape, "parameter \(name): shape \(newValue.shape) replaces \(variable.value.shape)")
            variable.value = newValue
        }
    }

    /// The accumulated gradient; empty when backward did not reach this parameter.
    public var gradient: [Float] {
        get { variable.gradient }
        set { variable.gradient = newValue }
    }

    public var count: Int { variable.value.count }

    /// Updates the values in place (optimizers): `body(values, gradient)`; the gradient pointer is nil when
    /// backward did not reach the parameter.
    func update(_ body: (UnsafeMutablePointer<Float>, UnsafePointer<Float>?) -> Void) {
        let gradient = variable.gradient
        variable.value.data.withUnsafeMutableBufferPointer { values in
            if gradient.isEmpty {
                body(values.baseAddress!, nil)
            } else {
                gradient.withUnsafeBufferPointer { body(values.baseAddress!, $0.baseAddress!) }
            }
        }
    }
}
