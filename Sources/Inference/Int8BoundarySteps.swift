import Graph
import Kernels
import Tensor

// The steps between the float world (graph inputs and outputs, nodes without an int8 kernel) and u8 storage.
// Their arithmetic is written exactly like the float executor's QuantizeLinear/DequantizeLinear (Float division,
// round half to even, saturation to the `bits` range), so at the boundaries both engines agree bit for bit.

/// QuantizeLinear of a float NCHW value into u8 storage (NHWC for images).
struct Int8QuantizeStep: Int8Step {
    let label: String
    let source: Int
    let output: Int
    let grid: ActivationGrid
    let layout: ActivationLayout
    var reads: [Int] { [] }
    var writes: [Int] { [output] }

    func run(in workspace: Int8Workspace, threads: Int) throws {
        guard let tensor = workspace.floats[source] else { throw Int8StepFailure("float input of \(label) was not computed") }
        let perImage = layout.elementsPerImage, batch = workspace.batch
        guard tensor.count == perImage * batch else {
            throw Int8StepFailure("\(label): expected \(batch)×\(layout.perImageShape) values, got shape \(tensor.shape)")
        }
        let destination = workspace.output(output)
        let scale = grid.scale, zeroPoint = Float(grid.zeroPoint), high = Float((1 << grid.bits) - 1)
        let channels = layout.channels, pixels = layout.pixels, channelsLast = layout.isChannelsLast
        // Logical index c·pixels + p is stored at p·channels + c (channels last); walking (c, p) avoids two integer
        // divisions per element (they were most of this step: 0.2 ms of a 12 ms batch of 32 at 32×32).
        let planes = channelsLast ? channels : 1, planeSize = channelsLast ? pixels : perImage
        let step = channelsLast ? channels : 1
        tensor.data.withUnsafeBufferPointer { x in
            for image in 0..<batch {
                let base = image * perImage
                for c in 0..<planes {
                    FloatQuantization.quantize(x.baseAddress! + base + c * planeSize, count: planeSize, scale: scale,
                                               zeroPoint: zeroPoint, high: high,
                                               into: destination.baseAddress! + base + c, stride: step)
                }
            }
        }
    }
}

/// DequantizeLinear of u8 storage into a new float NCHW tensor (a graph output, or the input of a float node).
/// With `codesOnly`, the raw codes as floats (a graph output that is itself a QuantizeLinear output).
struct Int8DequantizeStep: Int8Step {
    let label: String
    let input: Int
    let destination: Int
    let grid: ActivationGrid
    let layout: ActivationLayout
    var codesOnly = false
    var reads: [Int] { [input] }
    var writes: [Int] { [] }

    func run(in workspace: Int8Workspace, threads: Int) {
        let source = workspace.input(input)
        let perImage = layout.elementsPerImage, batch = workspace.batch
        let scale = codesOnly ? 1 : grid.scale, zeroPoint = codesOnly ? 0 : Float(grid.zeroPoint)
        let channels = layout.channels, pixels = layout.pixels, channelsLast = layout.isChannelsLast
        let values = [Float](unsafeUninitializedCapacity: perImage * batch) { y, initialized in
            for image in 0..<batch {
                let base = image * perImage
                for index in 0..<perImage {
                    let position = channelsLast ? (index % pixels) * channels + index / pixels : index
                    y[base + index] = (Float(source[base + position]) - zeroPoint) * scale
                }
            }
            initialized = perImage * batch
        }
        workspace.floats[destination] = Tensor(shape: [batch] + layout.perImageShape, data: values)
    }
}

/// A node without an int8 kernel (a `skip:`-ed layer, MaxPool, AveragePool, a mismatched Q/DQ grid ...), run by
/// the float executor on a one-node graph. Its float inputs come from dequantize steps or other float nodes; a
/// following QuantizeLinear brings the result back to u8. This path allocates its tensors on every run.
struct Int8FloatNodeStep: Int8Step {
    let label: String
    let executor: FloatExecutor
    let inputs: [(name: String, slot: Int)]
    let outputs: [(name: String, slot: Int)]
    var reads: [Int] { [] }
    var writes: [Int] { [] }

    func run(in workspace: Int8Workspace, threads: Int) throws {
        var feed: [String: Tensor] = [:]
        for (name, slot) in inputs {
            guard let tensor = workspace.floats[slot] else { throw Int8StepFailure("float input '\(name)' was not computed") }
            feed[name] = tensor
        }
        let results = try executor.run(feed)
        for (name, slot) in outputs { workspace.floats[slot] = results[name] }
    }

    /// The one-node graph: runtime inputs with the batch dynamic, the initializers it reads (weights already
    /// dequantized to float by the caller's constant folding).
    static func make(node: Node, graph: Graph, shapes: [String: ValueInfo], threads: Int,
                     inputSlots: [(name: String, slot: Int)], outputSlots: [(name: String, slot: Int)]) throws -> Int8FloatNodeStep {
        var initializers: [String: Initializer] = [:]
        var inputs: [ValueInfo] = []
        for name in node.inputs where !name.isEmpty {
            if let initializer = graph.initializers[name] {
                initializers[name] = initializer
            } else if !inputs.contains(where: { $0.name == name }) {
                var info = shapes[name] ?? ValueInfo(name: name, shape: [])
                if !info.shape.isEmpty { info.shape[0] = -1 }
                inputs.append(info)
            }
        }
        let outputs = node.outputs.filter { !$0.isEmpty }.map { name -> ValueInfo in
            var info = shapes[name] ?? ValueInfo(name: name, shape: [])
            if !info.shape.isEmpty { info.shape[0] = -1 }
            return info
        }
        let subgraph = Graph(name: node.name, inputs: inputs, outputs: outputs, nodes: [node], initializers: initializers)
        return Int8FloatNodeStep(label: node.name, executor: try FloatExecutor(graph: subgraph, threads: threads),
                                 inputs: inputSlots, outputs: outputSlots)
    }
}

/// A failure inside a step; the executor adds the step's label.
struct Int8StepFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
