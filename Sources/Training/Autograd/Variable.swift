import Tensor

/// A value on the autograd tape: a float32 tensor plus, once backward reaches it, the gradient of the loss with
/// respect to it (same element count, row-major like `value`).
///
/// A class because the tape's backward closures must see gradients that later steps accumulate into.
public final class Variable {
    /// Nil only while the value is deferred (see `deferred`).
    private var storage: Tensor?
    /// Set when the value was described instead of computed: a BatchNorm whose only reader is a convolution
    /// leaves `clamp(scale·x + offset)` for that convolution to compute while it reads (see `DeferredChannelAffine`).
    private let deferred: DeferredChannelAffine?

    /// Settable for inputs and parameters between steps; changing a value already recorded on a tape would
    /// make that tape's backward use the new value. Reading a deferred value computes and keeps it.
    public var value: Tensor {
        get {
            if let storage { return storage }
            let computed = deferred!.materialize()
            storage = computed
            return computed
        }
        set { storage = newValue }
    }
    /// Empty until some backward step adds to it (then `elementCount` elements). Reading a deferred gradient
    /// computes and keeps it.
    public internal(set) var gradient: [Float] {
        get {
            if let pending = pendingGradient {
                storedGradient = pending.materialize()
                pendingGradient = nil
            }
            return storedGradient
        }
        set {
            storedGradient = newValue
            pendingGradient = nil
        }
    }
    private var storedGradient: [Float] = []
    /// Set when the gradient was described instead of computed: a BatchNorm, this value's only reader, leaves its
    /// input gradient for the convolution that computed this value to compute as it reads it.
    private(set) var pendingGradient: DeferredInputGradient?
    /// False for data (images); true for parameters and anything computed from them.
    public let requiresGradient: Bool

    public init(_ value: Tensor, requiresGradient: Bool = false) {
        self.storage = value
        self.deferred = nil
        self.requiresGradient = requiresGradient
    }

    /// A value that readers compute from `deferred` as they read it (or, through `value`, once and for all).
    init(deferred: DeferredChannelAffine, requiresGradient: Bool) {
        self.storage = nil
        self.deferred = deferred
        self.requiresGradient = requiresGradient
    }

    public var shape: [Int] { storage?.shape ?? deferred!.shape }

    /// Elements of the value (without computing a deferred one).
    public var elementCount: Int { storage?.count ?? deferred!.shape.reduce(1, *) }

    /// The description of a value that has not been computed; nil once it has (or when it never was deferred).
    var pendingAffine: DeferredChannelAffine? { storage == nil ? deferred : nil }

    /// Whether backward reached this value.
    public var hasGradient: Bool { pendingGradient != nil || !storedGradient.isEmpty }

    /// Leaves the gradient to be computed by its reader (nothing may have reached it yet).
    func deferGradient(_ pending: DeferredInputGradient) {
        precondition(!hasGradient, "a deferred gradient must be the only contribution")
        pendingGradient = pending
    }

    /// Runs `body` on the gradient buffer, zero-filling it first if backward has not reached this value yet.
    /// Backward steps *add* into it: a value read by several nodes (a residual branch) sums their gradients.
    @inline(__always)
    public func accumulateGradient<Result>(_ body: (UnsafeMutablePointer<Float>) throws -> Result) rethrows -> Result {
        if pendingGradient != nil { _ = gradient }
        if storedGradient.isEmpty { storedGradient = [Float](repeating: 0, count: elementCount) }
        return try storedGradient.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
    }

    /// Runs `body` on the gradient buffer; `fresh` tells whether it is uninitialised (backward had not reached
    /// this value: `body` must *store* every element) or holds earlier contributions (`body` must *add*).
    /// Saves the zero-fill and the read of `accumulateGradient` for the first (usually only) contribution.
    @inline(__always)
    public func writeGradient(_ body: (UnsafeMutablePointer<Float>, _ fresh: Bool) -> Void) {
        if pendingGradient != nil { _ = gradient }
        if storedGradient.isEmpty {
            storedGradient = [Float](unsafeUninitializedCapacity: elementCount) { buffer, initialized in
                body(buffer.baseAddress!, true)
                initialized = buffer.count
            }
        } else {
            storedGradient.withUnsafeMutableBufferPointer { body($0.baseAddress!, false) }
        }
    }

    /// Adds `contribution` (same element count) to the gradient, sharing its storage when this is the first
    /// contribution (copy-on-write makes a later addition copy first), so pass-through ops cost nothing.
    public func addGradient(_ contribution: [Float]) {
        precondition(contribution.count == elementCount, "gradient of \(contribution.count) values for \(elementCount)")
        if pendingGradient != nil { _ = gradient }
        if storedGradient.isEmpty {
            storedGradient = contribution
        } else {
            storedGradient.withUnsafeMutableBufferPointer { target in
                contribution.withUnsafeBufferPointer { VectorMath.add($0.baseAddress!, into: target.baseAddress!, count: $0.count) }
            }
        }
    }

    /// Forgets the gradient (parameters between steps).
    public func zeroGradient() {
        gradient = []
    }
}
