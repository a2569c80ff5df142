import Tensor

/// The differentiable operations as functions of variables, for layers defined outside this module (QAT's
/// fake-quantized convolution computes `conv2d(x, fakeQuantized(weight))` with the weight a tape value).
public enum Functional {
    /// 2-D convolution, NCHW input, OIHW `weight`; depthwise when `groups` equals the channels with one filter each.
    public static func conv2d(_ x: Variable, weight: Variable, bias: Variable?, geometry: WindowGeometry, groups: Int = 1,
                              context: ForwardContext) -> Variable {
        Convolution.forward(x, weight: weight, bias: bias, geometry: geometry, groups: groups, context: context)
    }

    /// BatchNorm over channels; training mode uses and updates `statistics` (PyTorch momentum convention).
    /// With `inputAffine` (a, b per channel) it is BatchNorm of `a[c]·x + b[c]`, computed without that extra pass.
    public static func batchNorm(_ x: Variable, scale: Variable, shift: Variable, statistics: inout BatchNormalizationStatistics,
                                 momentum: Float, epsilon: Float, inputAffine: (scale: [Float], shift: [Float])? = nil,
                                 context: ForwardContext) -> Variable {
        BatchNormalization.forward(x, scale: scale, shift: shift, statistics: &statistics, momentum: momentum,
                                   epsilon: epsilon, inputAffine: inputAffine, context: context)
    }

    /// `alpha·x·weightᵀ + beta·bias`, `weight` as `[out, in]`.
    public static func linear(_ x: Variable, weight: Variable, bias: Variable?, alpha: Float = 1, beta: Float = 1,
                              context: ForwardContext) -> Variable {
        GemmOperation.forward(x, weight: weight, bias: bias, alpha: alpha, beta: beta, context: context)
    }

    public static func clamp(_ x: Variable, lower: Float, upper: Float, context: ForwardContext) -> Variable {
        Elementwise.clamp(x, lower: lower, upper: upper, context: context)
    }

    public static func add(_ a: Variable, _ b: Variable, context: ForwardContext) -> Variable {
        Elementwise.add(a, b, context: context)
    }

    public static func reshape(_ x: Variable, to shape: [Int], context: ForwardContext) -> Variable {
        Elementwise.reshape(x, to: shape, context: context)
    }
}
