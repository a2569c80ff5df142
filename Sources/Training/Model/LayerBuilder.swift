import Graph
import Tensor

/// Turns one graph node into a layer, reading its initializers as parameters. A parameter shared by two nodes
/// (same initializer name) is one `Parameter`.
struct LayerBuilder {
    let graph: Graph
    private var parametersByName: [String: Parameter] = [:]

    init(graph: Graph) {
        self.graph = graph
    }

    /// How many leading inputs of `op` are runtime values (the rest are initializers).
    static func runtimeInputCount(_ op: OpType) -> Int {
        op == .add ? 2 : 1
    }

    mutating func layer(for node: Node) throws -> Layer {
        func fail(_ message: String) -> TrainableModelError { TrainableModelError(nodeName: node.name, message: message) }
        guard node.outputs.count >= 1, !node.outputs[0].isEmpty else { throw fail("has no output") }
        let runtimeInputs = Self.runtimeInputCount(node.op)
        for name in node.inputs.prefix(runtimeInputs) where graph.initializers[name] != nil || name.isEmpty {
            throw fail("input '\(name)' must be a computed value, not a constant (\(node.op.rawValue) with constant operands is not trainable)")
        }
        switch node.op {
        case .conv:
            let weight = try parameter(node, 1, role: .weight, required: true)!
            guard weight.value.shape.count == 4 else { throw fail("expected a 2-D convolution (OIHW weights), got \(weight.value.shape)") }
            let bias = try parameter(node, 2, role: .bias, required: false)
            let kernel = Array(weight.value.shape[2...3])
            return Conv2d(weight: weight, bias: bias, geometry: try geometry(node, kernel: kernel), groups: node.int("group", default: 1))
        case .batchNormalization:
            let scale = try parameter(node, 1, role: .normalizationScale, required: true)!
            let shift = try parameter(node, 2, role: .normalizationShift, required: true)!
            let mean = try constant(node, 3), variance = try constant(node, 4)
            guard node.int("training_mode", default: 0) == 0 else { throw fail("training_mode=1 is not supported") }
            return BatchNorm2d(scale: scale, shift: shift,
                               statistics: BatchNormalizationStatistics(mean: mean.storage.floats, variance: variance.storage.floats),
                               momentum: 1 - node.float("momentum", default: 0.9), epsilon: node.float("epsilon", default: 1e-5),
                               meanName: mean.name, varianceName: variance.name)
        case .relu:
            return Clamp.relu()
        case .clip:
            return Clamp(lower: node.float("min", default: -.infinity), upper: node.float("max", default: .infinity))
        case .add:
            return Addition()
        case .globalAveragePool:
            return GlobalAveragePool()
        case .averagePool, .maxPool:
            guard node.int("ceil_mode", default: 0) == 0 else { throw fail("ceil_mode=1 is not supported") }
            let kernel = node.ints("kernel_shape") ?? []
            return Pool2d(kind: node.op == .maxPool ? .max : .average, geometry: try geometry(node, kernel: kernel),
                          countIncludePad: node.int("count_include_pad", default: 0) != 0)
        case .gemm:
            guard node.int("transA", default: 0) == 0 else { throw fail("transA=1 is not supported (the input must be [batch, features])") }
            let transposeB = node.int("transB", default: 0) != 0
            guard let weightInitializer = graph.initializers[node.inputs.count > 1 ? node.inputs[1] : ""],
                  weightInitializer.shape.count == 2 else {
                throw fail("Gemm needs a constant 2-D weight (input B) to be trainable")
            }
            var values = weightInitializer.storage.floats
            var shape = weightInitializer.shape
            if !transposeB {  // held as [out, in]
                let (k, n) = (shape[0], shape[1])
                var transposed = [Float](repeating: 0, count: values.count)
                for i in 0..<k { for j in 0..<n { transposed[j * k + i] = values[i * n + j] } }
                values = transposed
                shape = [n, k]
            }
            let weight = shared(name: weightInitializer.name, role: .weight, value: Tensor(shape: shape, data: values))
            var bias: Parameter? = nil
            if node.inputs.count > 2, !node.inputs[2].isEmpty {
                guard let c = graph.initializers[node.inputs[2]], c.storage.count == shape[0] else {
                    throw fail("Gemm's C must be a constant with one value per output feature to be trainable")
                }
                bias = shared(name: c.name, role: .bias, value: Tensor(shape: [shape[0]], data: c.storage.floats))
            }
            return Linear(weight: weight, bias: bias, alpha: node.float("alpha", default: 1), beta: node.float("beta", default: 1),
                          weightIsTransposedInGraph: !transposeB)
        case .flatten:
            return Reshape(.flatten(axis: node.int("axis", default: 1)))
        case .reshape:
            guard let target = node.ints("shape") else { throw fail("missing 'shape' attribute") }
            return Reshape(.target(target))
        case .identity:
            return Reshape(.identity)
        case .dropout:
            return Dropout(ratio: node.float("ratio", default: 0.5))
        case .mul, .matMul, .concat, .softmax, .pad, .quantizeLinear, .dequantizeLinear:
            throw fail("\(node.op.rawValue) is not a trainable operator (supported: Conv, BatchNormalization, Relu, Clip, Add, "
                       + "GlobalAveragePool, AveragePool, MaxPool, Gemm, Flatten, Reshape, Identity, Dropout)")
        }
    }

    private func geometry(_ node: Node, kernel: [Int]) throws -> WindowGeometry {
        let window = try node.windowAttributes(kernel: kernel)
        return WindowGeometry(kernelHeight: kernel[0], kernelWidth: kernel[1],
                              strideHeight: window.strides[0], strideWidth: window.strides[1],
                              padTop: window.pads[0], padLeft: window.pads[1], padBottom: window.pads[2], padRight: window.pads[3],
                              dilationHeight: window.dilations[0], dilationWidth: window.dilations[1])
    }

    private func constant(_ node: Node, _ index: Int) throws -> Initializer {
        guard index < node.inputs.count, let initializer = graph.initializers[node.inputs[index]] else {
            throw TrainableModelError(nodeName: node.name, message: "input #\(index) must be an initializer")
        }
        return initializer
    }

    private mutating func parameter(_ node: Node, _ index: Int, role: ParameterRole, required: Bool) throws -> Parameter? {
        guard index < node.inputs.count, !node.inputs[index].isEmpty else {
            if required { throw TrainableModelError(nodeName: node.name, message: "missing input #\(index) (\(role.rawValue))") }
            return nil
        }
        let initializer = try constant(node, index)
        return shared(name: initializer.name, role: role, value: Tensor(shape: initializer.shape, data: initializer.storage.floats))
    }

    private mutating func shared(name: String, role: ParameterRole, value: Tensor) -> Parameter {
        if let existing = parametersByName[name] { return existing }
        let parameter = Parameter(name: name, role: role, value: value)
        parametersByName[name] = parameter
        return parameter
    }
}
