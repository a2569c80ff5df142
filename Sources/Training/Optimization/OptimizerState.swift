import Foundation

/// An optimizer's state keyed by parameter *name* rather than object identity, so it survives a checkpoint:
/// the model is rebuilt from a file (new `Parameter` objects, same names) and the state is put back.
public struct OptimizerState: Sendable, Equatable {
    /// Slot ("momentum", "first_moment", "second_moment") → parameter name → values.
    public var slots: [String: [String: [Float]]]
    /// Steps the optimizer has taken (Adam's bias correction needs it; SGD keeps it for symmetry).
    public var stepCount: Int

    public init(slots: [String: [String: [Float]]] = [:], stepCount: Int = 0) {
        self.slots = slots
        self.stepCount = stepCount
    }
}

/// A checkpoint's optimizer state does not fit the model it is restored into.
public struct OptimizerStateError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// An optimizer whose state can be saved and restored by parameter name.
public protocol CheckpointableOptimizer: Optimizer {
    func exportState(for parameters: [Parameter]) -> OptimizerState
    /// Replaces the optimizer's state; throws when a saved buffer names no parameter or has the wrong length.
    func restoreState(_ state: OptimizerState, for parameters: [Parameter]) throws
}

extension OptimizerState {
    /// `slot[name]` for every parameter that has state, validated against `parameters`.
    fileprivate static func byIdentity(_ values: [String: [Float]], slot: String,
                                       parameters: [Parameter]) throws -> [ObjectIdentifier: [Float]] {
        let byName = Dictionary(parameters.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var result: [ObjectIdentifier: [Float]] = [:]
        for (name, buffer) in values {
            guard let parameter = byName[name] else {
                throw OptimizerStateError(description: "optimizer state '\(slot)' names parameter '\(name)', which the model does not have")
            }
            guard buffer.count == parameter.count else {
                throw OptimizerStateError(description: "optimizer state '\(slot)' of '\(name)' has \(buffer.count) values; the parameter has \(parameter.count)")
            }
            result[ObjectIdentifier(parameter)] = buffer
        }
        return result
    }
}

extension SGD: CheckpointableOptimizer {
    public func exportState(for parameters: [Parameter]) -> OptimizerState {
        var momentum: [String: [Float]] = [:]
        for parameter in parameters {
            if let buffer = buffers[ObjectIdentifier(parameter)], !buffer.isEmpty { momentum[parameter.name] = buffer }
        }
        return OptimizerState(slots: momentum.isEmpty ? [:] : ["momentum": momentum])
    }

    public func restoreState(_ state: OptimizerState, for parameters: [Parameter]) throws {
        // A parameter without a saved buffer starts its buffer from its next gradient, as on SGD's first step.
        // (Without momentum SGD keeps only empty buffers, so there is nothing to save or restore.)
        buffers = try OptimizerState.byIdentity(state.slots["momentum"] ?? [:], slot: "momentum", parameters: parameters)
    }
}

extension Adam: CheckpointableOptimizer {
    public func exportState(for parameters: [Parameter]) -> OptimizerState {
        var first: [String: [Float]] = [:], second: [String: [Float]] = [:]
        for parameter in parameters {
            guard let state = moments[ObjectIdentifier(parameter)] else { continue }
            first[parameter.name] = state.first
            second[parameter.name] = state.second
        }
        return OptimizerState(slots: ["first_moment": first, "second_moment": second], stepCount: stepCount)
    }

    public func restoreState(_ state: OptimizerState, for parameters: [Parameter]) throws {
        let first = try OptimizerState.byIdentity(state.slots["first_moment"] ?? [:], slot: "first_moment", parameters: parameters)
        let second = try OptimizerState.byIdentity(state.slots["second_moment"] ?? [:], slot: "second_moment", parameters: parameters)
        guard Set(first.keys) == Set(second.keys) else {
            throw OptimizerStateError(description: "optimizer state: first and second Adam moments cover different parameters")
        }
        moments = first.mapValues { (first: $0, second: [Float]()) }
        for (key, values) in second { moments[key]?.second = values }
        stepCount = state.stepCount
    }
}
