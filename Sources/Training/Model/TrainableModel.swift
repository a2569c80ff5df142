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
    /// Applied to these values when they are computed (see `init`).
    public let valueTransforms: [String: Layer]
    /// Per node, the inputs that are computed values (not initializers, not omitted), in input order.
    private let runtimeInputs: [[String]]
    /// Benchmarks only (nil otherwise): forward wall time per node index (value transforms under
    /// `OperationTimer.valueTransformTag`) is added to it, and a recording forward attaches it to the tape so
    /// backward steps are timed under the same tags.
    public var timer: OperationTimer?

    /// Builds one layer per node, then lets `rewriteLayers` replace any of them: QAT swaps a Conv and the
    /// BatchNorm after it for one BN-folded, fake-quantized convolution. The rewrite sees every built-in layer
    /// (so a replacement can take over their parameters and statistics) and the graph; replacements run with
    /// the node's computed inputs (initializer inputs are their own business) and their `parameters` join the
    /// model's.
    ///
    /// `valueTransforms` are applied to the named values as soon as they are computed (the graph input
    /// included), before any reader sees them: QAT fake-quantizes activations this way. Their parameters (learned
    /// quantization scales) join the model's after the layers'.
    ///
    /// `fuseBatchNormActivation`: a built-in BatchNorm whose only reader is a built-in ReLU/Clip applies the clamp
    /// itself (same results, one memory pass fewer each way); the clamp node then passes its input through.
    /// `deferBatchNormOutput`: such a BatchNorm whose clamped output is read by one convolution only (and is not
    /// transformed, nor a graph output) leaves computing it to that convolution (`BatchNorm2d.defersOutput`), and a
    /// BatchNorm whose input only it reads, from a convolution, leaves its input gradient to that convolution's
    /// backward (`defersInputGradient`): same results, no write and read-back of either tensor.
    public init(graph: Graph, rewriteLayers: ((inout [Layer], Graph) throws -> Void)? = nil,
                valueTransforms: [String: Layer] = [:], fuseBatchNormActivation: Bool = true,
                deferBatchNormOutput: Bool = true) throws {
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
        var layers: [Layer] = try graph.nodes.map { try builder.layer(for: $0) }
        try rewriteLayers?(&layers, graph)
        // Which nodes read each value: one reader is what makes fusing or deferring safe.
        var readers: [String: [Int]] = [:]
        for (index, node) in graph.nodes.enumerated() { for name in node.inputs { readers[name, default: []].append(index) } }
        let unshared = Set(graph.outputs.map(\.name)).union(valueTransforms.keys)
        if deferBatchNormOutput {
            Self.deferBatchNormInputGradients(graph: graph, layers: layers, readers: readers, excluded: unshared)
        }
        if fuseBatchNormActivation {
            Self.fuseBatchNormActivations(graph: graph, layers: &layers, readers: readers,
                                          graphOutputs: Set(graph.outputs.map(\.name)),
                                          deferringOutputs: deferBatchNormOutput, excludedFromDeferring: unshared)
        }
        let producedValues = Set([inputName] + graph.nodes.flatMap(\.outputs))
        if let unknown = valueTransforms.keys.sorted().first(where: { !producedValues.contains($0) }) {
            throw TrainableModelError(message: "a value transform names '\(unknown)', which no node computes")
        }
        let transformOrder = ([inputName] + graph.nodes.flatMap(\.outputs)).compactMap { valueTransforms[$0] }
        var parameters: [Parameter] = []
        var seen = Set<ObjectIdentifier>()
        for layer in layers + transformOrder {
            for parameter in layer.parameters where seen.insert(ObjectIdentifier(parameter)).inserted { parameters.append(parameter) }
        }
        self.layers = layers
        self.valueTransforms = valueTransforms
        self.parameters = parameters
        runtimeInputs = graph.nodes.map { node in node.inputs.filter { !$0.isEmpty && graph.initializers[$0] == nil } }
    }

    /// A built-in BatchNorm whose input comes from a built-in convolution that nothing else reads leaves its input
    /// gradient to that convolution's backward (`BatchNorm2d.defersInputGradient`): GEMM convolutions compute it
    /// image by image, the depthwise 3×3 C kernel chunk by chunk, other paths read `gradient`, which computes it whole.
    /// `excluded`: graph outputs and transformed values, which must stay stored.
    private static func deferBatchNormInputGradients(graph: Graph, layers: [Layer], readers: [String: [Int]],
                                                     excluded: Set<String>) {
        var producer: [String: Int] = [:]
        for (index, node) in graph.nodes.enumerated() { for name in node.outputs { producer[name] = index } }
        for (index, node) in graph.nodes.enumerated() {
            guard let norm = layers[index] as? BatchNorm2d, let value = node.inputs.first, !excluded.contains(value),
                  readers[value]?.count == 1, let source = producer[value], layers[source] is Conv2d else { continue }
            norm.defersInputGradient = true
        }
    }

    private static func fuseBatchNormActivations(graph: Graph, layers: inout [Layer], readers: [String: [Int]],
                                                 graphOutputs: Set<String>, deferringOutputs: Bool,
                                                 excludedFromDeferring: Set<String>) {
        for (index, node) in graph.nodes.enumerated() {
            guard let norm = layers[index] as? BatchNorm2d, norm.fusedClamp == nil, let value = node.outputs.first,
                  !graphOutputs.contains(value), let only = readers[value], only.count == 1,
                  let clamp = layers[only[0]] as? Clamp else { continue }
            norm.fusedClamp = clamp
            layers[only[0]] = FusedActivation(clamp: clamp)
            // The clamp node passes the BN's output on: defer it when one convolution alone reads that.
            let clamped = graph.nodes[only[0]].outputs.first ?? ""
            if deferringOutputs, !excludedFromDeferring.contains(clamped),
               let next = readers[clamped], next.count == 1, layers[next[0]] is Conv2d {
                norm.defersOutput = true
            }
        }
    }

    /// Total number of trainable values.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.count } }

    /// The BatchNorm layers (for freezing, statistics re-estimation, restoring after a diverged step, …),
    /// including those a rewritten layer took over (QAT's BN-folded convolution).
    public var batchNormLayers: [BatchNorm2d] {
        layers.compactMap { ($0 as? BatchNorm2d) ?? ($0 as? BatchNormOwner)?.batchNorm }
    }

    /// Runs the graph on `input` (NCHW batch). In training mode with a tape, every step is recorded for backward.
    public func callAsFunction(_ input: Tensor, context: ForwardContext) throws -> Variable {
        var values: [String: Variable] = [:]
        let timer = self.timer
        if let timer { context.tape?.timer = timer }
        defer { timer?.currentTag = OperationTimer.untagged }
        // Runs `body` under `tag`, adding its wall time to the timer when there is one.
        func timed(_ tag: Int, _ body: () -> Variable) -> Variable {
            guard let timer else { return body() }
            timer.currentTag = tag
            let start = DispatchTime.now().uptimeNanoseconds
            let result = body()
            timer.addForward(DispatchTime.now().uptimeNanoseconds - start, tag: tag)
            return result
        }
        func store(_ value: Variable, as name: String) {
            values[name] = valueTransforms[name].map { transform in
                timed(OperationTimer.valueTransformTag) { transform([value], context: context) }
            } ?? value
        }
        store(Variable(input), as: inputName)
        for (index, node) in sourceGraph.nodes.enumerated() {
            let layer = layers[index]
            let operands = try runtimeInputs[index].map { name -> Variable in
                guard let value = values[name] else {
                    throw TrainableModelError(nodeName: node.name, message: "input '\(name)' is not computed before this node")
                }
                return value
            }
            store(timed(index) { layer(operands, context: context) }, as: node.outputs[0])
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
