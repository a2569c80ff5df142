import Foundation

/// The learning rate as a function of the (0-based) optimizer step.
public protocol LearningRateSchedule: Sendable {
    func learningRate(at step: Int) -> Float
}

/// Always `rate`.
public struct ConstantSchedule: LearningRateSchedule {
    public var rate: Float
    public init(_ rate: Float) { self.rate = rate }
    public func learningRate(at step: Int) -> Float { rate }
}

/// `base · γ^⌊step / stepSize⌋` (PyTorch's `StepLR`).
public struct StepSchedule: LearningRateSchedule {
    public var base: Float, stepSize: Int, gamma: Float
    public init(base: Float, stepSize: Int, gamma: Float = 0.1) {
        precondition(stepSize > 0, "step size must be positive")
        self.base = base; self.stepSize = stepSize; self.gamma = gamma
    }
    public func learningRate(at step: Int) -> Float {
        base * Foundation.pow(gamma, Float(step / stepSize))
    }
}

/// Linear warm-up from `base · warmupStartFactor` to `base` over `warmupSteps`, then cosine decay to `minimum`
/// at `totalSteps` (and `minimum` afterwards).
public struct CosineSchedule: LearningRateSchedule {
    public var base: Float, minimum: Float, warmupSteps: Int, totalSteps: Int, warmupStartFactor: Float
    public init(base: Float, totalSteps: Int, warmupSteps: Int = 0, minimum: Float = 0, warmupStartFactor: Float = 0) {
        precondition(totalSteps > warmupSteps && warmupSteps >= 0, "cosine schedule: need totalSteps > warmupSteps ≥ 0")
        self.base = base; self.minimum = minimum; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
        self.warmupStartFactor = warmupStartFactor
    }
    public func learningRate(at step: Int) -> Float {
        if step < warmupSteps {
            let fraction = Float(step) / Float(warmupSteps)
            return base * (warmupStartFactor + (1 - warmupStartFactor) * fraction)
        }
        let progress = min(1, Float(step - warmupSteps) / Float(totalSteps - warmupSteps))
        return minimum + (base - minimum) * 0.5 * (1 + Foundation.cos(Float.pi * progress))
    }
}

/// PyTorch's `OneCycleLR` (cosine annealing, two phases): from `maxRate / divFactor` up to `maxRate` over
/// `pctStart` of the run, then down to `maxRate / (divFactor · finalDivFactor)` at the last step.
public struct OneCycleSchedule: LearningRateSchedule {
    public var maxRate: Float, totalSteps: Int, pctStart: Float, divFactor: Float, finalDivFactor: Float
    public init(maxRate: Float, totalSteps: Int, pctStart: Float = 0.3, divFactor: Float = 25, finalDivFactor: Float = 1e4) {
        precondition(totalSteps > 1, "one-cycle needs at least 2 steps")
        self.maxRate = maxRate; self.totalSteps = totalSteps; self.pctStart = pctStart
        self.divFactor = divFactor; self.finalDivFactor = finalDivFactor
    }
    public func learningRate(at step: Int) -> Float {
        let initial = maxRate / divFactor, final = initial / finalDivFactor
        let peakStep = Float(pctStart * Float(totalSteps)) - 1
        let lastStep = Float(totalSteps - 1)
        let s = Float(min(step, totalSteps - 1))
        func anneal(_ from: Float, _ to: Float, _ fraction: Float) -> Float {
            to + (from - to) / 2 * (1 + Foundation.cos(Float.pi * fraction))
        }
        if s <= peakStep {
            return anneal(initial, maxRate, s / peakStep)
        }
        return anneal(maxRate, final, (s - peakStep) / (lastStep - peakStep))
    }
}

/// MNN's (and Caffe's) `inv` policy: `base · (1 + γ·step)^(−power)`; its QAT demo uses 1e-4, γ 1e-4, power 0.75.
public struct InverseSchedule: LearningRateSchedule {
    public var base: Float, gamma: Float, power: Float
    public init(base: Float, gamma: Float, power: Float) {
        self.base = base; self.gamma = gamma; self.power = power
    }
    public func learningRate(at step: Int) -> Float {
        base * Foundation.pow(1 + gamma * Float(step), -power)
    }
}
