import Graph
import Tensor

/// One prepared node of the float reference executor: weights are packed and attributes decoded once, in `init`;
/// `run` only computes. Inputs arrive in the node's input order (`nil` for an omitted optional input), output
/// shapes come from shape inference for the current batch size. `inputs` is `inout` so an operator can take a
/// tensor that no later node reads and overwrite it in place instead of copying it.
protocol FloatOperator: Sendable {
    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor]
}

/// A failure inside one operator; the executor adds which node it was.
struct OperatorFailure: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

extension Array where Element == Tensor? {
    /// The input at `index`, which shape inference guarantees is present.
    func required(_ index: Int) throws -> Tensor {
        guard index < count, let tensor = self[index] else { throw OperatorFailure("missing input \(index)") }
        return tensor
    }

    /// Moves the input out of the array; when the executor released its own reference, the result is uniquely
    /// referenced and mutating it does not copy.
    mutating func take(_ index: Int) throws -> Tensor {
        let tensor = try required(index)
        self[index] = nil
        return tensor
    }
}

/// Builds the prepared operator for one node of a validated graph.
enum FloatOperatorFactory {
    static func make(_ node: Node, graph: Graph, shapes: [String: ValueInfo]) throws -> FloatOperator {
        func initializer(_ index: Int) -> Initializer? {
            index < node.inputs.count ? graph.initializers[node.inputs[index]] : nil
        }
        func shape(_ index: Int) -> [Int] { shapes[node.inputs[index]]!.shape }
        switch node.op {
        case .conv:
            guard let weights = initializer(1) else { throw OperatorFailure("weights W must be an initializer") }
            let bias = initializer(2)?.storage.floats
            return try ConvolutionOperator(node: node, weights: weights, bias: bias)
        case .batchNormalization:
            guard let scale = initializer(1), let offset = initializer(2), let mean = initializer(3), let variance = initializer(4) else {
                throw OperatorFailure("scale, B, mean and var must be initializers")
            }
            return BatchNormalizationOperator(scale: scale.storage.floats, offset: offset.storage.floats,
                                              mean: mean.storage.floats, variance: variance.storage.floats,
                                              epsilon: node.float("epsilon", default: 1e-5))
        case .relu:
            return ClampOperator(minimum: 0, maximum: .infinity)
        case .clip:
            return ClampOperator(minimum: node.float("min", default: -.infinity), maximum: node.float("max", default: .infinity))
        case .add:
            return BroadcastBinaryOperator(kind: .add)
        case .mul:
            return BroadcastBinaryOperator(kind: .multiply)
        case .globalAveragePool:
            return GlobalAveragePoolOperator()
        case .averagePool, .maxPool:
            return try PoolingOperator(node: node)
        case .gemm:
            return GemmOperator(node: node, constantB: initializer(1), constantC: initializer(2))
        case .matMul:
            return MatMulOperator()
        case .flatten, .reshape, .dropout, .identity:
            return ReshapeOperator()
        case .concat:
            return ConcatOperator(axis: node.int("axis", default: 0))
        case .softmax:
            return SoftmaxOperator(axis: node.int("axis", default: -1))
        case .pad:
            return PadOperator(pads: node.ints("pads") ?? [], value: node.float("value", default: 0))
        case .quantizeLinear, .dequantizeLinear:
            guard let scale = initializer(1) else { throw OperatorFailure("scale must be an initializer") }
            let zeroPoint = node.inputs.count > 2 ? initializer(2) : nil
            let inputRank = shape(0).count
            let axis = node.int("axis", default: 1)
            return AffineQuantizationOperator(
                mode: node.op == .quantizeLinear ? .quantize : .dequantize, scales: scale.storage.floats,
                zeroPoints: zeroPoint?.storage.floats ?? [Float](repeating: 0, count: scale.storage.count),
                zeroPointType: zeroPoint?.storage.dataType ?? .uint8,
                axis: axis < 0 ? axis + inputRank : axis,
                bits: node.int("bits", default: 8))
        }
    }
}
