import Foundation
import Graph
import Tensor

/// A graph that cannot become a trainable model, naming the node at fault.
public struct TrainableModelError: Error, CustomStringConvertible, Sendable {
    public var nodeName: String?
    public var message: String

    public var description: String {
        if let nodeName { return "node '\(nodeName)': \(message)" }
        return "TrainableModel: \(message)"
    }
}

/// A float `Graph` turned into layers that train ("extract"), and written back into an equivalent graph.
///
/// Nodes run in the graph's (topological) order; every value is a `Variable` named as in the graph, so a value
/// read by two nodes (a residual branch) receives the sum of both gradients. Parameters are named after the
/// initializers they came from, and `exportGraph()` replaces exactly those initializers (plus BN statistics).
public final class TrainableModel {
    /// The graph the model was built from; the template of `exportGraph()`.
    public let sourceGraph: Graph
    public let inputName: String
    public let outputName: String
    /// One layer per graph node, in node order.
    public let layers: [Layer]
    /// Every trainable parameter, each once, in first-use order.
    public let parameters: [Parameter]
    /// Per node, the inputs that are computed values (not initializers, not omitted), in input order.
    private let runtimeInputs: [[String]]

    /// Builds one layer per node. `customLayer` may supply the layer for any node (return nil to use the built-in
    /// one): QAT replaces convolutions with fake-quantized ones, or handles Quantize/DequantizeLinear nodes. A
    /// custom layer receives the node's computed inputs (initializer inputs are its own business) and its
    /// `parameters` join the model's.
    ///
    /// `fuseBatchNormActivation`: a built-in BatchNorm whose only reader is a built-in ReLU/Clip applies the clamp
    /// itself (same results, one memory pass fewer each way); the clamp node then passes its input through.
    public init(graph: Graph, customLayer: ((Node, Graph) throws -> Layer?)? = nil, fuseBatchNormActivation: Bool = true) throws {
        guard graph.inputs.count == 1 else {
            throw TrainableModelError(message: "expected one graph input, found \(graph.inputs.map(\.name))")
        }
        guard graph.outputs.count == 1 else {
            throw TrainableModelError(message: "expected one graph output, found \(graph.outputs.map(\.name))")
        }
        sourceGraph = graph
        inputName = graph.inputs[0].name
        outputName = graph.outputs[0].name
        var builder = LayerBuilder(graph: graph)
        var parameters: [Parameter] = []
        var seen = Set<ObjectIdentifier>()
        var layers: [Layer] = try graph.nodes.map { node in
            if let custom = try customLayer?(node, graph) {
                for parameter in custom.parameters where seen.insert(ObjectIdentifier(parameter)).inserted { parameters.append(parameter) }
                return custom
            }
            let layer = try builder.layer(for: node)
            for parameter in layer.parameters where seen.insert(ObjectIdentifier(parameter)).inserted { parameters.append(parameter) }
            return layer
        }
        if fuseBatchNormActivation { Self.fuseBatchNormActivations(graph: graph, layers: &layers) }
        self.layers = layers
        self.parameters = parameters
        runtimeInputs = graph.nodes.map { node in node.inputs.filter { !$0.isEmpty && graph.initializers[$0] == nil } }
    }

    private static func fuseBatchNormActivations(graph: Graph, layers: inout [Layer]) {
        var readers: [String: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() { for name in node.inputs { readers[name, default: []].append(index) } }
        let graphOutputs = Set(graph.outputs.map(\.name))
        for (index, node) in graph.nodes.enumerated() {
            guard let norm = layers[index] as? BatchNorm2d, norm.fusedClamp == nil, let value = node.outputs.first,
                  !graphOutputs.contains(value), let only = readers[value], only.count == 1,
                  let clamp = layers[only[0]] as? Clamp else { continue }
            norm.fusedClamp = clamp
            layers[only[0]] = FusedActivation(clamp: clamp)
        }
    }

    /// Total number of trainable values.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// The BatchNorm layers (for freezing, statistics re-estimation, …).
    public var batchNormLayers: [BatchNorm2d] { layers.compactMap { $0 as? BatchNorm2d } }

    /// Runs the graph on `input` (NCHW batch). In training mode with a tape, every step is recorded for backward.
    public func callAsFunction(_ input: Tensor, context: ForwardContext) throws -> Variable {
        var values: [String: Variable] = [inputName: Variable(input)]
        for (index, node) in sourceGraph.nodes.enumerated() {
            let layer = layers[index]
            let operands = try runtimeInputs[index].map { name -> Variable in
                guard let value = values[name] else {
                    throw TrainableModelError(nodeName: node.name, message: "input '\(name)' is not computed before this node")
                }
                return value
            }
            values[node.outputs[0]] = layer(operands, context: context)
        }
        guard let output = values[outputName] else {
            throw TrainableModelError(message: "graph output '\(outputName)' was not computed")
        }
        return output
    }

    /// Evaluation-mode forward without a tape (no gradients kept).
    public func predict(_ input: Tensor, threads: Int = 2) throws -> Tensor {
        try self(input, context: ForwardContext(tape: nil, isTraining: false, threads: threads)).value
    }

    /// Forgets every parameter's gradient (call before each step's backward).
    public func zeroGradients() {
        for parameter in parameters { parameter.variable.zeroGradient() }
    }

    /// The source graph with trained parameters and BN statistics written back. Structure, names, inputs,
    /// outputs and metadata are unchanged.
    public func exportGraph() -> Graph {
        var graph = sourceGraph
        for index in graph.nodes.indices {
            var node = graph.nodes[index]
            layers[index].export(into: &graph, node: &node)
            graph.nodes[index] = node
        }
        return graph
    }
}
