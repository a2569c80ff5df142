import Foundation

/// Updates parameters from their gradients. Stateful (momentum buffers, Adam moments), keyed by parameter
/// identity, so one optimizer instance belongs to one model.
public protocol Optimizer: AnyObject {
    /// One update of every parameter that has a gradient, at `learningRate`.
    func step(_ parameters: [Parameter], learningRate: Float)
}

/// Which parameters weight decay applies to.
public enum WeightDecayScope: Sendable {
    case all
    /// Skip BN scale/shift and biases (a common recipe: decaying them only hurts).
    case weightsOnly

    func applies(to parameter: Parameter) -> Bool {
        switch self {
        case .all: return true
        case .weightsOnly: return parameter.role == .weight
        }
    }
}

/// Stochastic gradient descent with PyTorch's semantics: `g ← g + λ·w`; `b ← μ·b + g` (b = g on the first
/// step); `g ← g + μ·b` (Nesterov) or `g ← b`; `w ← w − lr·g`.
public final class SGD: Optimizer {
    public var momentum: Float
    public var nesterov: Bool
    public var weightDecay: Float
    public var weightDecayScope: WeightDecayScope
    /// Momentum buffers; internal so `OptimizerState` can save and restore them for checkpoints.
    var buffers: [ObjectIdentifier: [Float]] = [:]

    public init(momentum: Float = 0, nesterov: Bool = false, weightDecay: Float = 0, weightDecayScope: WeightDecayScope = .all) {
        precondition(!nesterov || momentum > 0, "Nesterov momentum needs momentum > 0")
        self.momentum = momentum
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        self.weightDecayScope = weightDecayScope
    }

    public func step(_ parameters: [Parameter], learningRate: Float) {
        for parameter in parameters where !parameter.gradient.isEmpty {
            let decay = weightDecayScope.applies(to: parameter) ? weightDecay : 0
            let key = ObjectIdentifier(parameter)
            let isFirst = buffers[key] == nil
            var buffer = buffers.removeValue(forKey: key) ?? (momentum != 0 ? [Float](repeating: 0, count: parameter.count) : [])
            let (momentum, nesterov) = (self.momentum, self.nesterov)
            let learningRate = learningRate * parameter.learningRateMultiplier
            let count = parameter.count  // read before `update` holds exclusive access to the values
            parameter.update { w, g in
                guard let g else { return }
                if momentum == 0 {
                    for i in 0..<count { w[i] -= learningRate * (g[i] + decay * w[i]) }
                    return
                }
                buffer.withUnsafeMutableBufferPointer { b in
                    for i in 0..<count {
                        let gradient = g[i] + decay * w[i]
                        b[i] = isFirst ? gradient : momentum * b[i] + gradient
                        let direction = nesterov ? gradient + momentum * b[i] : b[i]
                        w[i] -= learningRate * direction
                    }
                }
            }
            buffers[key] = buffer
        }
    }
}

/// Adam (`decoupledWeightDecay: false`, L2 added to the gradient as PyTorch's `Adam`) or AdamW (decoupled:
/// `w ← w − lr·λ·w` before the Adam update, PyTorch's `AdamW`). Bias-corrected moments.
public final class Adam: Optimizer {
    public var beta1: Float
    public var beta2: Float
    public var epsilon: Float
    public var weightDecay: Float
    public var decoupledWeightDecay: Bool
    public var weightDecayScope: WeightDecayScope
    /// Internal so `OptimizerState` can save and restore them for checkpoints.
    var moments: [ObjectIdentifier: (first: [Float], second: [Float])] = [:]
    /// Steps taken (the bias correction's t).
    public internal(set) var stepCount = 0

    public init(beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8, weightDecay: Float = 0,
                decoupledWeightDecay: Bool = false, weightDecayScope: WeightDecayScope = .all) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        self.decoupledWeightDecay = decoupledWeightDecay
        self.weightDecayScope = weightDecayScope
    }

    /// AdamW with PyTorch's default decay 0.01.
    public static func adamW(weightDecay: Float = 0.01, beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) -> Adam {
        Adam(beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay, decoupledWeightDecay: true)
    }

    public func step(_ parameters: [Parameter], learningRate: Float) {
        stepCount += 1
        let t = Float(stepCount)
        let correction1 = 1 - Foundation.pow(beta1, t), correction2 = 1 - Foundation.pow(beta2, t)
        let (beta1, beta2, epsilon, decoupled) = (self.beta1, self.beta2, self.epsilon, self.decoupledWeightDecay)
        for parameter in parameters where !parameter.gradient.isEmpty {
            let decay = weightDecayScope.applies(to: parameter) ? weightDecay : 0
            let key = ObjectIdentifier(parameter)
            var state = moments.removeValue(forKey: key)
                ?? ([Float](repeating: 0, count: parameter.count), [Float](repeating: 0, count: parameter.count))
            let learningRate = learningRate * parameter.learningRateMultiplier
            let count = parameter.count  // read before `update` holds exclusive access to the values
            parameter.update { w, g in
                guard let g else { return }
                state.first.withUnsafeMutableBufferPointer { m in
                    state.second.withUnsafeMutableBufferPointer { v in
                        for i in 0..<count {
                            var gradient = g[i]
                            if decoupled {
                                w[i] -= learningRate * decay * w[i]
                            } else {
                                gradient += decay * w[i]
                            }
                            m[i] = beta1 * m[i] + (1 - beta1) * gradient
                            v[i] = beta2 * v[i] + (1 - beta2) * gradient * gradient
                            let mHat = m[i] / correction1, vHat = v[i] / correction2
                            w[i] -= learningRate * mHat / (vHat.squareRoot() + epsilon)
                        }
                    }
                }
            }
            moments[key] = state
        }
    }
}

/// Gradient clipping by the global L2 norm over all parameters (PyTorch's `clip_grad_norm_`).
public enum GradientClipping {
    /// Scales every gradient by `maxNorm / norm` when the norm exceeds `maxNorm`; returns the norm before clipping.
    @discardableResult
    public static func clipGlobalNorm(_ parameters: [Parameter], maxNorm: Float) -> Float {
        let norm = globalNorm(parameters)
        guard norm > maxNorm, norm.isFinite else { return norm }
        let scale = maxNorm / (norm + 1e-6)
        for parameter in parameters where !parameter.gradient.isEmpty {
            let count = parameter.count
            parameter.variable.accumulateGradient { g in for i in 0..<count { g[i] *= scale } }
        }
        return norm
    }

    /// `√(Σ g²)` over every parameter's gradient (accumulated in Double).
    public static func globalNorm(_ parameters: [Parameter]) -> Float {
        var total: Double = 0
        for parameter in parameters where !parameter.gradient.isEmpty {
            total += Double(parameter.gradient.withUnsafeBufferPointer { VectorMath.dot($0.baseAddress!, $0.baseAddress!, count: $0.count) })
        }
        return Float(total.squareRoot())
    }
}
