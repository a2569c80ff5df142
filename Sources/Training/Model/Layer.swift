import Graph
import Tensor

/// A trainable operation (DL4S / swift-apis style): a small type holding its parameters and state, called on
/// variables. Layers built from a graph node write their trained state back into that graph on export.
public protocol Layer: AnyObject {
    /// Trainable tensors, in a fixed order (optimizers and checkpoints rely on it).
    var parameters: [Parameter] { get }
    func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable
    /// Writes parameters and state (running statistics, …) into `graph`'s initializers and `node`'s attributes.
    func export(into graph: inout Graph, node: inout Node)
}

extension Layer {
    public var parameters: [Parameter] { [] }

    public func callAsFunction(_ input: Variable, context: ForwardContext) -> Variable {
        self([input], context: context)
    }

    /// Default export: each parameter replaces the initializer of the same name (same shape).
    public func export(into graph: inout Graph, node: inout Node) {
        for parameter in parameters {
            graph.initializers[parameter.name] = Initializer(name: parameter.name, shape: parameter.value.shape,
                                                             storage: .float32(parameter.value.data))
        }
    }
}

/// 2-D convolution with groups; depthwise (groups = channels, one filter each) takes the direct kernel.
public final class Conv2d: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let geometry: WindowGeometry
    public let groups: Int

    public init(weight: Parameter, bias: Parameter?, geometry: WindowGeometry, groups: Int = 1) {
        precondition(weight.value.shape.count == 4, "Conv2d: weight must be OIHW, got \(weight.value.shape)")
        precondition(weight.value.shape[0] % groups == 0, "Conv2d: \(weight.value.shape[0]) filters in \(groups) groups")
        self.weight = weight
        self.bias = bias
        self.geometry = geometry
        self.groups = groups
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Convolution.forward(inputs[0], weight: weight.variable, bias: bias?.variable, geometry: geometry, groups: groups,
                            context: context)
    }
}

/// BatchNorm over the channels of NCHW. `momentum` is the weight of the new batch statistic (PyTorch's
/// convention); ONNX's `momentum` attribute is the weight of the old running value, `1 − momentum`.
public final class BatchNorm2d: Layer {
    public let scale: Parameter
    public let shift: Parameter
    public var statistics: BatchNormalizationStatistics
    public var momentum: Float
    public let epsilon: Float
    /// Names of the running-statistic initializers written on export.
    public let meanName: String, varianceName: String

    public init(scale: Parameter, shift: Parameter, statistics: BatchNormalizationStatistics, momentum: Float = 0.1,
                epsilon: Float = 1e-5, meanName: String, varianceName: String) {
        self.scale = scale
        self.shift = shift
        self.statistics = statistics
        self.momentum = momentum
        self.epsilon = epsilon
        self.meanName = meanName
        self.varianceName = varianceName
    }

    /// A ReLU/Clip that `TrainableModel` folded into this layer (its graph node then runs `FusedActivation`):
    /// the layer outputs `clamp(BN(x))`, saving one pass over the activation forward and backward.
    public internal(set) var fusedClamp: Clamp?

    /// Set by `TrainableModel` when the output's only reader is a convolution: the output is then passed on
    /// deferred (`DeferredChannelAffine`), and the convolution computes it as it reads it.
    public internal(set) var defersOutput = false

    /// Set by `TrainableModel` when the input comes from a convolution that only this layer reads:
    /// the input gradient is then passed on deferred (`DeferredInputGradient`), and the convolution's backward
    /// computes it as it reads it.
    public internal(set) var defersInputGradient = false

    public var parameters: [Parameter] { [scale, shift] }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        BatchNormalization.forward(inputs[0], scale: scale.variable, shift: shift.variable, statistics: &statistics,
                                   momentum: momentum, epsilon: epsilon,
                                   fusedClamp: fusedClamp.map { (lower: $0.lower, upper: $0.upper) },
                                   deferOutput: defersOutput, deferInputGradient: defersInputGradient, context: context)
    }

    public func export(into graph: inout Graph, node: inout Node) {
        for parameter in parameters {
            graph.initializers[parameter.name] = Initializer(name: parameter.name, shape: parameter.value.shape,
                                                             storage: .float32(parameter.value.data))
        }
        let channels = statistics.mean.count
        graph.initializers[meanName] = Initializer(name: meanName, shape: [channels], storage: .float32(statistics.mean))
        graph.initializers[varianceName] = Initializer(name: varianceName, shape: [channels], storage: .float32(statistics.variance))
        let onnxMomentum = node.float("momentum", default: 0.9)
        if abs((1 - onnxMomentum) - momentum) > 1e-7 { node.attributes["momentum"] = .float(1 - momentum) }
        node.attributes["epsilon"] = .float(epsilon)
    }
}

/// A layer that computes (and exports) a BatchNorm inside itself, e.g. a convolution with BN folded in.
public protocol BatchNormOwner: AnyObject {
    var batchNorm: BatchNorm2d { get }
}

/// `min(max(x, lower), upper)`: ReLU (`0, +∞`), ReLU6 (`0, 6`) or any ONNX Clip.
public final class Clamp: Layer {
    public let lower: Float, upper: Float

    public init(lower: Float, upper: Float) {
        self.lower = lower
        self.upper = upper
    }

    public static func relu() -> Clamp { Clamp(lower: 0, upper: .infinity) }
    public static func relu6() -> Clamp { Clamp(lower: 0, upper: 6) }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Elementwise.clamp(inputs[0], lower: lower, upper: upper, context: context)
    }
}

/// Stands in for a ReLU/Clip node whose clamp the preceding `BatchNorm2d` already applies (`fusedClamp`): passes
/// its input through unchanged. The graph node itself is kept, so export is unaffected.
public final class FusedActivation: Layer {
    public let clamp: Clamp

    public init(clamp: Clamp) {
        self.clamp = clamp
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        inputs[0]
    }
}

/// Element-wise sum of two equally shaped values (residual connections).
public final class Addition: Layer {
    public init() {}

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Elementwise.add(inputs[0], inputs[1], context: context)
    }
}

/// Mean over each spatial plane: `[N, C, H, W] → [N, C, 1, 1]`.
public final class GlobalAveragePool: Layer {
    public init() {}

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Pooling.globalAverage(inputs[0], context: context)
    }
}

/// MaxPool or AveragePool over 2-D windows.
public final class Pool2d: Layer {
    public enum Kind: Sendable { case max, average }
    public let kind: Kind
    public let geometry: WindowGeometry
    public let countIncludePad: Bool

    public init(kind: Kind, geometry: WindowGeometry, countIncludePad: Bool = false) {
        self.kind = kind
        self.geometry = geometry
        self.countIncludePad = countIncludePad
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Pooling.window(inputs[0], isMax: kind == .max, geometry: geometry, countIncludePad: countIncludePad, context: context)
    }
}

/// Fully connected: `alpha·X·Wᵀ + beta·b` with `W` as `[out, in]`. `weightIsTransposedInGraph` records that the
/// source Gemm stored `W` as `[in, out]` (`transB = 0`), so export writes it back that way.
public final class Linear: Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public let alpha: Float, beta: Float
    public let weightIsTransposedInGraph: Bool

    public init(weight: Parameter, bias: Parameter?, alpha: Float = 1, beta: Float = 1, weightIsTransposedInGraph: Bool = false) {
        self.weight = weight
        self.bias = bias
        self.alpha = alpha
        self.beta = beta
        self.weightIsTransposedInGraph = weightIsTransposedInGraph
    }

    public var parameters: [Parameter] { [weight] + (bias.map { [$0] } ?? []) }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        GemmOperation.forward(inputs[0], weight: weight.variable, bias: bias?.variable, alpha: alpha, beta: beta, context: context)
    }

    public func export(into graph: inout Graph, node: inout Node) {
        let (out, inFeatures) = (weight.value.shape[0], weight.value.shape[1])
        let values = weight.value.data
        if weightIsTransposedInGraph {
            var transposed = [Float](repeating: 0, count: values.count)
            for o in 0..<out { for i in 0..<inFeatures { transposed[i * out + o] = values[o * inFeatures + i] } }
            graph.initializers[weight.name] = Initializer(name: weight.name, shape: [inFeatures, out], storage: .float32(transposed))
        } else {
            graph.initializers[weight.name] = Initializer(name: weight.name, shape: [out, inFeatures], storage: .float32(values))
        }
        if let bias {
            let shape = graph.initializers[bias.name]?.shape ?? bias.value.shape
            graph.initializers[bias.name] = Initializer(name: bias.name, shape: shape, storage: .float32(bias.value.data))
        }
    }
}

/// Flatten (ONNX `axis`), Reshape (fixed target with ONNX's 0 / −1 rules) or Identity: the same elements under
/// another shape.
public final class Reshape: Layer {
    public enum Rule: Sendable {
        case flatten(axis: Int)
        case target([Int])
        case identity
    }
    public let rule: Rule

    public init(_ rule: Rule) {
        self.rule = rule
    }

    public func outputShape(for input: [Int]) -> [Int] {
        switch rule {
        case .identity:
            return input
        case .flatten(let axis):
            let split = axis < 0 ? axis + input.count : axis
            return [input.prefix(split).reduce(1, *), input.dropFirst(split).reduce(1, *)]
        case .target(let target):
            var shape = target.enumerated().map { axis, size in size == 0 ? input[axis] : size }
            if let unknown = shape.firstIndex(of: -1) {
                let known = shape.enumerated().filter { $0.offset != unknown }.map(\.element).reduce(1, *)
                shape[unknown] = input.reduce(1, *) / max(known, 1)
            }
            return shape
        }
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Elementwise.reshape(inputs[0], to: outputShape(for: inputs[0].shape), context: context)
    }
}

/// Inverted dropout (identity in evaluation).
public final class Dropout: Layer {
    public let ratio: Float

    public init(ratio: Float) {
        precondition(ratio >= 0 && ratio < 1, "dropout ratio must be in [0, 1), got \(ratio)")
        self.ratio = ratio
    }

    public func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        Elementwise.dropout(inputs[0], ratio: ratio, context: context)
    }
}
