import Foundation

/// The optimizers a recipe names, built in one place for `train` and `qat`.
public enum OptimizerKind: String, CaseIterable, Sendable {
    case sgd, adam, adamw

    /// SGD (PyTorch semantics, optional Nesterov), Adam (L2 in the gradient) or AdamW (decoupled decay);
    /// `scope` says which parameters decay.
    public func make(momentum: Float, nesterov: Bool = false, weightDecay: Float, scope: WeightDecayScope) -> CheckpointableOptimizer {
        switch self {
        case .sgd: return SGD(momentum: momentum, nesterov: nesterov, weightDecay: weightDecay, weightDecayScope: scope)
        case .adam: return Adam(weightDecay: weightDecay, weightDecayScope: scope)
        case .adamw:
            let adamW = Adam.adamW(weightDecay: weightDecay)
            adamW.weightDecayScope = scope
            return adamW
        }
    }
}

/// The learning-rate schedules a recipe names, built in one place for `train` and `qat`.
public enum ScheduleKind: String, CaseIterable, Sendable {
    case constant, step, cosine, oneCycle = "one_cycle", inv

    /// The rate at every step of a run of `totalSteps` (0-based). `warmupSteps` ramps linearly from 0 (cosine and
    /// one_cycle have their own ramp); `stepSize` (steps) and `gamma` are `step`'s; `gamma` and `power` are `inv`'s
    /// (`base·(1 + gamma·step)^−power`, MNN's); `minimum` is where `cosine` ends.
    public func make(base: Float, totalSteps: Int, warmupSteps: Int = 0, stepSize: Int = 1, gamma: Float, power: Float = 0.75,
                     minimum: Float = 0) throws -> LearningRateSchedule {
        switch self {
        case .constant:
            return LinearWarmup(ConstantSchedule(base), steps: warmupSteps)
        case .step:
            return LinearWarmup(StepSchedule(base: base, stepSize: max(1, stepSize), gamma: gamma), steps: warmupSteps)
        case .inv:
            return LinearWarmup(InverseSchedule(base: base, gamma: gamma, power: power), steps: warmupSteps)
        case .cosine:
            guard totalSteps > warmupSteps else {
                throw ScheduleError("warmup_steps (\(warmupSteps)) must be less than the \(totalSteps) training steps")
            }
            return CosineSchedule(base: base, totalSteps: totalSteps, warmupSteps: warmupSteps, minimum: minimum)
        case .oneCycle:
            guard totalSteps >= 2, totalSteps > warmupSteps else {
                throw ScheduleError("schedule one_cycle needs at least 2 steps and warmup_steps below them (\(totalSteps) steps, warmup_steps \(warmupSteps))")
            }
            // PyTorch's pct_start (0.3) unless warmup_steps sets the rising phase.
            let rising = warmupSteps > 0 ? Float(warmupSteps) / Float(totalSteps) : 0.3
            return OneCycleSchedule(maxRate: base, totalSteps: totalSteps, pctStart: rising)
        }
    }
}

/// A schedule that cannot be built from the numbers given.
public struct ScheduleError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A schedule preceded by a linear ramp from 0 to its own value over `steps` steps (as `CosineSchedule` warms up).
public struct LinearWarmup: LearningRateSchedule {
    public let base: any LearningRateSchedule
    public let steps: Int

    public init(_ base: any LearningRateSchedule, steps: Int) {
        self.base = base
        self.steps = steps
    }

    public func learningRate(at step: Int) -> Float {
        let rate = base.learningRate(at: step)
        return step < steps ? rate * Float(step) / Float(steps) : rate
    }
}
