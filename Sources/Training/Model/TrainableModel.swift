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

    public init(graph: Graph) throws {
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
        layers = try graph.nodes.map { try builder.layer(for: $0) }
        parameters = builder.parameterOrder
    }

    /// Total number of trainable values.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// The BatchNorm layers (for freezing, statistics re-estimation, …).
    public var batchNormLayers: [BatchNorm2d] { layers.compactMap { $0 as? BatchNorm2d } }

    /// Runs the graph on `input` (NCHW batch). In training mode with a tape, every step is recorded for backward.
    public func callAsFunction(_ input: Tensor, context: ForwardContext) throws -> Variable {
        var values: [String: Variable] = [inputName: Variable(input)]
        // Release each value after its last reader so peak memory stays that of a forward pass.
        for (node, layer) in zip(sourceGraph.nodes, layers) {
            let operands = try node.inputs.prefix(LayerBuilder.runtimeInputCount(node.op)).map { name -> Variable in
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
