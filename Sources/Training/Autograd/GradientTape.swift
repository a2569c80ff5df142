import Dispatch
import Tensor

/// A reverse-mode tape: each differentiable operation appends a closure that, given its output's gradient, adds
/// to its inputs' gradients. `backward(from:)` runs them newest first (DL4S / swift-apis style).
///
/// One tape per training step: the closures hold their operands alive, so the tape is dropped (or `reset`)
/// after backward.
public final class GradientTape {
    private var steps: [() -> Void] = []
    /// Benchmarks only (nil otherwise): `timer.currentTag` of each recorded step, and `backward` adds each step's
    /// wall time to `timer` under that tag. `TrainableModel` attaches its timer here.
    public var timer: OperationTimer?
    private var tags: [Int] = []

    public init() {}

    /// Number of recorded operations (tests, diagnostics).
    public var count: Int { steps.count }

    /// Records the backward step of an operation that produced `output`. Skipped at backward time when no
    /// gradient flowed into `output` (a value that does not influence the loss).
    func record(_ output: Variable, _ backward: @escaping () -> Void) {
        guard output.requiresGradient else { return }
        steps.append { [unowned output] in
            guard output.hasGradient else { return }
            backward()
        }
        if let timer {
            // Steps recorded before the timer was attached count as untagged.
            tags += repeatElement(OperationTimer.untagged, count: steps.count - 1 - tags.count)
            tags.append(timer.currentTag)
        }
    }

    /// Seeds `d loss / d loss = 1` (or `seed` for a non-scalar output) and runs every step in reverse order.
    public func backward(from loss: Variable, seed: [Float]? = nil) {
        precondition(loss.requiresGradient, "backward from a value that does not depend on any parameter")
        let initial = seed ?? [Float](repeating: 1, count: loss.value.count)
        precondition(initial.count == loss.value.count, "seed has \(initial.count) values for a tensor of \(loss.value.count)")
        loss.accumulateGradient { gradient in
            for i in 0..<initial.count { gradient[i] += initial[i] }
        }
        if let timer {
            for index in steps.indices.reversed() {
                let start = DispatchTime.now().uptimeNanoseconds
                steps[index]()
                timer.addBackward(DispatchTime.now().uptimeNanoseconds - start,
                                  tag: index < tags.count ? tags[index] : OperationTimer.untagged)
            }
        } else {
            for step in steps.reversed() { step() }
        }
        steps.removeAll(keepingCapacity: true)
        tags.removeAll(keepingCapacity: true)
    }

    /// Drops every recorded step without running it (evaluation, or an abandoned step).
    public func reset() {
        steps.removeAll(keepingCapacity: true)
        tags.removeAll(keepingCapacity: true)
    }
}

/// Wall time of forward and backward work per tag, for benchmarks (`qatflow bench-train`): `TrainableModel`
/// tags its work with the graph node index (value transforms such as QAT's activation fake quantization with
/// `valueTransformTag`); work outside the model (the loss) is `untagged`.
public final class OperationTimer {
    public static let untagged = -1
    public static let valueTransformTag = -2
    /// The tag given to tape steps recorded from now on.
    public var currentTag = OperationTimer.untagged
    public private(set) var forwardNanoseconds: [Int: UInt64] = [:]
    public private(set) var backwardNanoseconds: [Int: UInt64] = [:]

    public init() {}

    public func addForward(_ nanoseconds: UInt64, tag: Int) { forwardNanoseconds[tag, default: 0] += nanoseconds }
    public func addBackward(_ nanoseconds: UInt64, tag: Int) { backwardNanoseconds[tag, default: 0] += nanoseconds }

    public func reset() {
        forwardNanoseconds = [:]
        backwardNanoseconds = [:]
    }
}

/// What an operation needs to know besides its operands: where to record, training or evaluation mode, how many
/// threads to use, and the random stream for stochastic layers (Dropout).
public final class ForwardContext {
    /// Nil in evaluation without gradients: nothing is recorded.
    public let tape: GradientTape?
    public let isTraining: Bool
    public let threads: Int
    public var random: SeededRandom

    public init(tape: GradientTape?, isTraining: Bool, threads: Int = 2, random: SeededRandom = SeededRandom(seed: 0)) {
        self.tape = tape
        self.isTraining = isTraining
        self.threads = max(1, threads)
        self.random = random
    }

    /// Whether an output computed from `inputs` needs a backward step (create the output `Variable` with
    /// `requiresGradient:` set to this).
    public func needsGradient(_ inputs: Variable?...) -> Bool {
        tape != nil && inputs.contains { $0?.requiresGradient == true }
    }

    /// Records the backward step of a new operation (public so other modules, e.g. fake quantization, can add
    /// differentiable operations): `backward` reads `output.gradient` and adds into its inputs' gradients with
    /// `accumulateGradient`, `writeGradient` or `addGradient`. Nothing is recorded without a tape or when
    /// `output.requiresGradient` is false.
    public func record(_ output: Variable, _ backward: @escaping () -> Void) {
        tape?.record(output, backward)
    }
}
