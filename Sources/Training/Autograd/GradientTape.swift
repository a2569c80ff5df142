import Tensor

/// A reverse-mode tape: each differentiable operation appends a closure that, given its output's gradient, adds
/// to its inputs' gradients. `backward(from:)` runs them newest first (DL4S / swift-apis style).
///
/// One tape per training step: the closures hold their operands alive, so the tape is dropped (or `reset`)
/// after backward.
public final class GradientTape {
    private var steps: [() -> Void] = []

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
    }

    /// Seeds `d loss / d loss = 1` (or `seed` for a non-scalar output) and runs every step in reverse order.
    public func backward(from loss: Variable, seed: [Float]? = nil) {
        precondition(loss.requiresGradient, "backward from a value that does not depend on any parameter")
        let initial = seed ?? [Float](repeating: 1, count: loss.value.count)
        precondition(initial.count == loss.value.count, "seed has \(initial.count) values for a tensor of \(loss.value.count)")
        loss.accumulateGradient { gradient in
            for i in 0..<initial.count { gradient[i] += initial[i] }
        }
        for step in steps.reversed() { step() }
        steps.removeAll(keepingCapacity: true)
    }

    /// Drops every recorded step without running it (evaluation, or an abandoned step).
    public func reset() {
        steps.removeAll(keepingCapacity: true)
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
