import Graph
import Kernels

/// Prepare step of the int8 engine: pattern-matches a validated QDQ graph (docs/quantization.md) into an
/// `Int8Program`.
///
/// Every activation QuantizeLinear output (`t::q`) becomes a u8 storage. Then, for each such Q, the nodes that
/// produce its input are matched against the kernel patterns
///
///     DQ → Conv (1×1 | depthwise 3×3 | group 1) → [Relu | Clip] → Q     QuantizedGEMM / Depthwise / Convolution
///     DQ → Gemm → [Relu | Clip] → Q                                    QuantizedGEMM (one row per image)
///     DQ, DQ → Add → [Relu | Clip] → Q                                 QuantizedAdd
///     DQ → GlobalAveragePool → Q                                       int32 sums, one rescale (Int8GlobalAveragePoolStep)
///     DQ → Flatten | Reshape | Identity → Q, equal grids               shared storage or a reorder
///
/// (weights DequantizeLinear of int8, biases of int32 initializers). The matched nodes disappear into one step.
/// Everything else falls back to float: an activation DQ feeding an unmatched node becomes a dequantize step,
/// the node runs in the float executor, and the Q after it a quantize step.
struct Int8GraphCompiler {
    let graph: Graph
    /// `graph` with constant DequantizeLinear nodes folded: the initializers float fallback nodes read.
    let folded: Graph
    /// Concrete shapes for batch 1 (per-image shapes are these without the first dimension).
    let shapes: [String: ValueInfo]
    let threads: Int

    private var producer: [String: Int] = [:]
    private var consumers: [String: [Int]] = [:]
    private var grids: [String: ActivationGrid] = [:]
    private var layouts: [String: ActivationLayout] = [:]
    private var storages: [String: Int] = [:]
    /// Activation DequantizeLinear output → the u8 value it reads and its own grid.
    private var dequantized: [String: (source: String, grid: ActivationGrid)] = [:]
    private var floatSlots: [String: Int] = [:]
    private var program = Int8Program()

    init(graph: Graph, threads: Int) throws {
        self.graph = graph
        folded = GraphTransforms.foldConstantDequantization(graph)
        self.threads = threads
        let one = Dictionary(uniqueKeysWithValues: graph.inputs.map { ($0.name, [1] + $0.shape.dropFirst()) })
        let two = Dictionary(uniqueKeysWithValues: graph.inputs.map { ($0.name, [2] + $0.shape.dropFirst()) })
        shapes = try ShapeInference.infer(graph, inputShapes: one)
        let shapesForTwo = try ShapeInference.infer(graph, inputShapes: two)
        for (index, node) in graph.nodes.enumerated() {
            for output in node.outputs where !output.isEmpty { producer[output] = index }
            for input in Set(node.inputs) where !input.isEmpty { consumers[input, default: []].append(index) }
            // Storage is sized per image, so every runtime value must carry the batch in its first dimension.
            let constant = node.inputs.allSatisfy { $0.isEmpty || graph.initializers[$0] != nil }
            for output in node.outputs where !output.isEmpty && !constant {
                guard let a = shapes[output]?.shape, let b = shapesForTwo[output]?.shape,
                      a.first == 1, b.first == 2, a.dropFirst() == b.dropFirst() else {
                    throw Int8ExecutorError(node: node, "output '\(output)' does not have the batch as its first dimension")
                }
            }
        }
    }

    mutating func compile() throws -> Int8Program {
        try collectActivations()
        var patternSteps: [Int: any Int8Step] = [:]
        var claimed = Set<Int>()
        for (index, node) in graph.nodes.enumerated() where node.op == .quantizeLinear && grids[node.outputs[0]] != nil {
            if let matched = try match(quantize: index) {
                if let step = matched.step { patternSteps[index] = step }
                claimed.formUnion(matched.nodes)
            }
        }
        for input in graph.inputs {
            let slot = floatSlot(input.name)
            program.inputs.append((input.name, slot))
        }
        // A quantized Gemm whose output stays float (the classifier's logits): integer accumulation, float result.
        for (index, node) in graph.nodes.enumerated() where node.op == .gemm && !claimed.contains(index) {
            if let step = try floatOutputGemmStep(node) {
                patternSteps[index] = step
                claimed.insert(index)
            }
        }
        let outputNames = Set(graph.outputs.map(\.name))
        for (index, node) in graph.nodes.enumerated() {
            if let step = patternSteps[index] { program.steps.append(step); continue }
            if claimed.contains(index) || isConstantDequantization(node) { continue }
            if node.op == .dequantizeLinear, let view = dequantized[node.outputs[0]] {
                let readers = consumers[node.outputs[0]] ?? []
                guard outputNames.contains(node.outputs[0]) || readers.contains(where: { !claimed.contains($0) }) else { continue }
                let slot = floatSlot(node.outputs[0])
                program.steps.append(Int8DequantizeStep(label: node.name, input: storages[view.source]!,
                                                        destination: slot, grid: view.grid, layout: layouts[view.source]!))
            } else if node.op == .quantizeLinear, let grid = grids[node.outputs[0]] {
                guard let source = floatSlots[node.inputs[0]] else {
                    throw Int8ExecutorError(node: node, "input '\(node.inputs[0])' is not a float value the int8 engine computes")
                }
                program.steps.append(Int8QuantizeStep(label: node.name, source: source, output: storages[node.outputs[0]]!,
                                                      grid: grid, layout: layouts[node.outputs[0]]!))
            } else {
                try appendFloatNode(node)
            }
        }
        for output in graph.outputs {
            if let slot = floatSlots[output.name] {
                program.outputs.append((output.name, slot))
            } else if let storage = storages[output.name] {
                // A u8 value as graph output: its codes, as the float executor returns them.
                let slot = floatSlot(output.name)
                program.steps.append(Int8DequantizeStep(label: output.name, input: storage, destination: slot,
                                                        grid: grids[output.name]!, layout: layouts[output.name]!, codesOnly: true))
                program.outputs.append((output.name, slot))
            } else {
                throw Int8ExecutorError(node: nil, "graph output '\(output.name)' is not computed by the int8 program")
            }
        }
        program.floatSlotCount = floatSlots.count
        return program
    }

    // MARK: - Activations

    /// Grids, layouts and storages of every activation Q output; views of every activation DQ output.
    private mutating func collectActivations() throws {
        for node in graph.nodes {
            switch node.op {
            case .quantizeLinear where graph.initializers[node.inputs[0]] == nil:
                let output = node.outputs[0]
                let grid = try activationGrid(of: node)
                grids[output] = grid
                let layout = ActivationLayout(perImageShape: Array(shapes[output]!.shape.dropFirst()))
                layouts[output] = layout
                if let source = freeReshapeSource(of: node, grid: grid, layout: layout) {
                    storages[output] = storages[source]  // same bytes, same order: no step at all
                } else {
                    storages[output] = program.storageBytesPerImage.count
                    program.storageBytesPerImage.append(layout.elementsPerImage)
                }
            case .dequantizeLinear where grids[node.inputs[0]] != nil:
                dequantized[node.outputs[0]] = (node.inputs[0], try activationGrid(of: node))
            case .dequantizeLinear where graph.initializers[node.inputs[0]] == nil:
                throw Int8ExecutorError(node: node, "DequantizeLinear of '\(node.inputs[0])', which is not a QuantizeLinear output")
            default:
                break
            }
        }
    }

    private func activationGrid(of node: Node) throws -> ActivationGrid {
        guard let scale = graph.initializers[node.inputs[1]]?.storage.floats, scale.count == 1, scale[0] > 0, scale[0].isFinite else {
            throw Int8ExecutorError(node: node, "activation quantization needs one positive scale (per-tensor)")
        }
        var zeroPoint: UInt8 = 0
        if node.inputs.count > 2, !node.inputs[2].isEmpty {
            guard let initializer = graph.initializers[node.inputs[2]], case .uint8(let values) = initializer.storage, values.count == 1 else {
                throw Int8ExecutorError(node: node, "activation zero point must be one uint8 value")
            }
            zeroPoint = values[0]
        }
        let bits = node.int("bits", default: 8)
        guard (2...8).contains(bits), Int(zeroPoint) < 1 << bits else {
            throw Int8ExecutorError(node: node, "activation bits \(bits) with zero point \(zeroPoint) are outside the u8 scheme")
        }
        return ActivationGrid(scale: scale[0], zeroPoint: zeroPoint, bits: bits)
    }

    /// The u8 value a `DQ → Flatten/Reshape/Identity → Q` chain copies unchanged (same grid, same storage order).
    private func freeReshapeSource(of quantize: Node, grid: ActivationGrid, layout: ActivationLayout) -> String? {
        guard let view = reshapeChain(into: quantize)?.view, view.grid == grid,
              let sourceLayout = layouts[view.source], !sourceLayout.isChannelsLast, !layout.isChannelsLast else { return nil }
        return view.source
    }

    private func reshapeChain(into quantize: Node) -> (reshape: Node, view: (source: String, grid: ActivationGrid))? {
        guard let index = producer[quantize.inputs[0]] else { return nil }
        let node = graph.nodes[index]
        guard [.flatten, .reshape, .identity, .dropout].contains(node.op), onlyReader(of: node.outputs[0]) == quantize,
              let view = dequantized[node.inputs[0]] else { return nil }
        return (node, view)
    }

    // MARK: - Patterns

    /// The step replacing the nodes that produce Q's input (nil step: a free reshape), with the claimed nodes.
    private mutating func match(quantize index: Int) throws -> (step: (any Int8Step)?, nodes: Set<Int>)? {
        let quantize = graph.nodes[index]
        let output = quantize.outputs[0]
        let grid = grids[output]!, layout = layouts[output]!

        if let chain = reshapeChain(into: quantize), chain.view.grid == grid {
            let reshape = chain.reshape, view = chain.view
            let nodes: Set<Int> = [index, producer[reshape.outputs[0]]!]
            if storages[output] == storages[view.source] { return (nil, nodes) }
            let source = layouts[view.source]!
            var table = [Int32](repeating: 0, count: layout.elementsPerImage)
            for logical in 0..<layout.elementsPerImage {
                table[layout.storagePosition(ofLogical: logical)] = Int32(source.storagePosition(ofLogical: logical))
            }
            return (Int8ReorderStep(label: reshape.name, input: storages[view.source]!, output: storages[output]!, table: table), nodes)
        }

        // [Relu | Clip] fused into the clamp.
        guard var coreIndex = producer[quantize.inputs[0]], onlyReader(of: quantize.inputs[0]) == quantize else { return nil }
        var clamp = grid.outputQuantization
        var nodes: Set<Int> = [index]
        let activation = graph.nodes[coreIndex]
        if activation.op == .relu || activation.op == .clip {
            guard let inner = producer[activation.inputs[0]], onlyReader(of: activation.inputs[0]) == activation,
                  [.conv, .gemm, .add, .globalAveragePool].contains(graph.nodes[inner].op) else { return nil }
            if activation.op == .relu {
                clamp = clamp.relu()
            } else {
                let low = activation.float("min", default: -.infinity), high = activation.float("max", default: .infinity)
                clamp = clamp.clipped(realMin: low.isFinite ? Double(low) : nil, realMax: high.isFinite ? Double(high) : nil,
                                      scale: Double(grid.scale))
            }
            nodes.insert(coreIndex)
            coreIndex = inner
        }
        nodes.insert(coreIndex)
        let core = graph.nodes[coreIndex]
        let label = core.name
        let destination = storages[output]!
        let inputs = core.inputs.prefix(core.op == .add ? 2 : 1)
        guard inputs.allSatisfy({ dequantized[$0] != nil }) else { return nil }
        let first = dequantized[core.inputs[0]]!
        let inputStorage = storages[first.source]!, inputLayout = layouts[first.source]!

        switch core.op {
        case .add:
            let second = dequantized[core.inputs[1]]!
            guard layouts[second.source] == inputLayout, inputLayout == layout else { return nil }
            let kernel = QuantizedAdd(aScale: Double(first.grid.scale), aZeroPoint: first.grid.zeroPoint,
                                      bScale: Double(second.grid.scale), bZeroPoint: second.grid.zeroPoint,
                                      outputScale: Double(grid.scale), output: clamp)
            return (Int8AddStep(label: label, kernel: kernel, a: inputStorage, b: storages[second.source]!, output: destination,
                                elementsPerImage: layout.elementsPerImage), nodes)
        case .globalAveragePool:
            guard inputLayout.perImageShape.count == 3, layout.elementsPerImage == inputLayout.channels else { return nil }
            guard inputLayout.pixels <= 1 << 23 else { return nil }  // int32 sums of u8
            return (Int8GlobalAveragePoolStep(label: label, input: inputStorage, output: destination, pixels: inputLayout.pixels,
                                              channels: inputLayout.channels, inputZeroPoint: Int32(first.grid.zeroPoint),
                                              scale: Double(first.grid.scale) / (Double(inputLayout.pixels) * Double(grid.scale)),
                                              clamp: clamp), nodes)
        case .conv:
            guard let step = try convolutionStep(core, input: first.grid, inputLayout: inputLayout, inputStorage: inputStorage,
                                                 output: grid, outputLayout: layout, clamp: clamp, destination: destination) else { return nil }
            return (step, nodes)
        case .gemm:
            guard let step = try gemmStep(core, input: first.grid, inputLayout: inputLayout, inputStorage: inputStorage,
                                          output: grid, outputLayout: layout, clamp: clamp, destination: destination) else { return nil }
            return (step, nodes)
        default:
            return nil
        }
    }

    private mutating func convolutionStep(_ node: Node, input: ActivationGrid, inputLayout: ActivationLayout, inputStorage: Int,
                                          output: ActivationGrid, outputLayout: ActivationLayout, clamp: OutputQuantization,
                                          destination: Int) throws -> (any Int8Step)? {
        guard inputLayout.perImageShape.count == 3, outputLayout.perImageShape.count == 3,
              let weights = quantizedWeights(node, outputAxis: 0) else { return nil }
        let shape = weights.shape
        let (outputChannels, inputChannels, height, width) = (shape[0], inputLayout.perImageShape[0],
                                                              inputLayout.perImageShape[1], inputLayout.perImageShape[2])
        let group = node.int("group", default: 1)
        let strides = node.ints("strides") ?? [1, 1], pads = node.ints("pads") ?? [0, 0, 0, 0]
        let dilations = node.ints("dilations") ?? [1, 1]
        let autoPad = node.attributes["auto_pad"]?.string ?? "NOTSET"
        guard shape.count == 4, strides.count == 2, pads.count == 4, dilations == [1, 1], autoPad == "NOTSET" else { return nil }
        guard let bias = try quantizedBias(node, inputScale: input.scale, weightScales: weights.scales, channels: outputChannels) else { return nil }
        let multipliers = Int8Requantization.multipliers(inputScale: input.scale, weightScales: weights.scales,
                                                         outputScale: output.scale)
        let outputSize = (outputLayout.perImageShape[1], outputLayout.perImageShape[2])
        let step: any Int8Step
        if group == 1, shape[2] == 1, shape[3] == 1, strides == [1, 1], pads == [0, 0, 0, 0], inputChannels <= 32_768 {
            let kernel = QuantizedGEMM(outputChannels: outputChannels, depth: inputChannels, weights: weights.values, bias: bias,
                                       multipliers: multipliers, inputZeroPoint: input.zeroPoint, output: clamp)
            step = Int8GEMMStep(label: node.name, kernel: kernel, input: inputStorage, output: destination, rowsPerImage: height * width)
        } else if group == inputChannels, group == outputChannels, shape[1] == 1, shape[2] == 3, shape[3] == 3,
                  pads == [1, 1, 1, 1], strides[0] == strides[1], strides[0] == 1 || strides[0] == 2 {
            let kernel = QuantizedDepthwiseConvolution3x3(channels: outputChannels, stride: strides[0], weights: weights.values,
                                                          bias: bias, multipliers: multipliers, inputZeroPoint: input.zeroPoint,
                                                          output: clamp)
            guard kernel.outputSize(height: height, width: width) == outputSize else { return nil }
            step = Int8DepthwiseStep(label: node.name, kernel: kernel, input: inputStorage, output: destination, height: height, width: width)
        } else if group == 1, shape[1] == inputChannels, shape[1] * shape[2] * shape[3] <= 32_768 {
            let geometry = QuantizedConvolution.Geometry(kernelHeight: shape[2], kernelWidth: shape[3], strideHeight: strides[0],
                                                         strideWidth: strides[1], padTop: pads[0], padLeft: pads[1],
                                                         padBottom: pads[2], padRight: pads[3])
            let kernel = QuantizedConvolution(inputChannels: inputChannels, outputChannels: outputChannels, geometry: geometry,
                                              weights: weights.values, bias: bias, multipliers: multipliers,
                                              inputZeroPoint: input.zeroPoint, output: clamp)
            guard kernel.outputSize(height: height, width: width) == outputSize else { return nil }
            program.convolutionScratch.append((kernel, height, width))
            step = Int8ConvolutionStep(label: node.name, kernel: kernel, input: inputStorage, output: destination, height: height, width: width)
        } else {
            return nil  // grouped (non-depthwise) or other depthwise geometries: float fallback
        }
        return step
    }

    private func gemmStep(_ node: Node, input: ActivationGrid, inputLayout: ActivationLayout, inputStorage: Int,
                          output: ActivationGrid, outputLayout: ActivationLayout, clamp: OutputQuantization,
                          destination: Int) throws -> (any Int8Step)? {
        let transposed = node.int("transB", default: 0) != 0
        guard inputLayout.perImageShape.count == 1, outputLayout.perImageShape.count == 1, node.int("transA", default: 0) == 0,
              node.float("alpha", default: 1) == 1, node.float("beta", default: 1) == 1,
              let weights = quantizedWeights(node, outputAxis: transposed ? 0 : 1), weights.shape.count == 2 else { return nil }
        let (outputChannels, depth) = transposed ? (weights.shape[0], weights.shape[1]) : (weights.shape[1], weights.shape[0])
        guard depth == inputLayout.perImageShape[0], outputChannels == outputLayout.perImageShape[0], depth <= 32_768 else { return nil }
        var rowMajor = weights.values  // [N, K]
        if !transposed {
            for n in 0..<outputChannels { for k in 0..<depth { rowMajor[n * depth + k] = weights.values[k * outputChannels + n] } }
        }
        guard let bias = try quantizedBias(node, inputScale: input.scale, weightScales: weights.scales, channels: outputChannels) else { return nil }
        let multipliers = Int8Requantization.multipliers(inputScale: input.scale, weightScales: weights.scales,
                                                         outputScale: output.scale)
        let kernel = QuantizedGEMM(outputChannels: outputChannels, depth: depth, weights: rowMajor, bias: bias,
                                   multipliers: multipliers, inputZeroPoint: input.zeroPoint, output: clamp)
        return Int8GEMMStep(label: node.name, kernel: kernel, input: inputStorage, output: destination, rowsPerImage: 1)
    }

    /// `Gemm(DQ(x), DQ(W), DQ(b))` with a float output: int32 accumulators `Σ (x − z)·W + b` scaled once by
    /// `s_in · s_w[n]` (the bias scale) — the exact value the QDQ graph describes, rounded once to float.
    private mutating func floatOutputGemmStep(_ node: Node) throws -> (any Int8Step)? {
        let transposed = node.int("transB", default: 0) != 0
        guard let first = dequantized[node.inputs[0]], let inputStorage = storages[first.source],
              let inputLayout = layouts[first.source], inputLayout.perImageShape.count == 1,
              node.int("transA", default: 0) == 0, node.float("alpha", default: 1) == 1, node.float("beta", default: 1) == 1,
              let weights = quantizedWeights(node, outputAxis: transposed ? 0 : 1), weights.shape.count == 2 else { return nil }
        let (outputChannels, depth) = transposed ? (weights.shape[0], weights.shape[1]) : (weights.shape[1], weights.shape[0])
        guard depth == inputLayout.perImageShape[0], depth <= 32_768 else { return nil }
        var rowMajor = weights.values  // [N, K]
        if !transposed {
            for n in 0..<outputChannels { for k in 0..<depth { rowMajor[n * depth + k] = weights.values[k * outputChannels + n] } }
        }
        guard let bias = try quantizedBias(node, inputScale: first.grid.scale, weightScales: weights.scales, channels: outputChannels) else { return nil }
        // The multiplier and output grid are placeholders: runFloatOutput does not requantize.
        let kernel = QuantizedGEMM(outputChannels: outputChannels, depth: depth, weights: rowMajor, bias: bias,
                                   multipliers: [QuantizedMultiplier(1)], inputZeroPoint: first.grid.zeroPoint,
                                   output: OutputQuantization(zeroPoint: 0))
        return Int8GEMMFloatOutputStep(label: node.name, kernel: kernel, scales: weights.scales.map { first.grid.scale * $0 },
                                       input: inputStorage, destination: floatSlot(node.outputs[0]))
    }

    // MARK: - Weights and biases

    /// Input 1 as an int8 initializer behind a DequantizeLinear with zero points 0 and one scale per output
    /// channel (along `outputAxis`) or one for all; nil when it is anything else (the node then runs in float).
    private func quantizedWeights(_ node: Node, outputAxis: Int) -> (values: [Int8], shape: [Int], scales: [Float])? {
        guard node.inputs.count > 1, let index = producer[node.inputs[1]], isConstantDequantization(graph.nodes[index]) else { return nil }
        let dequantize = graph.nodes[index]
        guard let initializer = graph.initializers[dequantize.inputs[0]], case .int8(let values) = initializer.storage,
              let scales = graph.initializers[dequantize.inputs[1]]?.storage.floats else { return nil }
        let channels = initializer.shape[outputAxis]
        var axis = dequantize.int("axis", default: 1)
        if axis < 0 { axis += initializer.shape.count }
        guard scales.count == 1 || (scales.count == channels && axis == outputAxis), scales.allSatisfy({ $0 >= 0 && $0.isFinite }),
              zeroPoints(of: dequantize).allSatisfy({ $0 == 0 }) else { return nil }
        return (values, initializer.shape, scales.count == 1 ? Array(repeating: scales[0], count: channels) : scales)
    }

    /// The int32 bias in the accumulator's scale `s_in · s_w[c]`: the stored codes when the bias
    /// DequantizeLinear already has that scale (the quantizer's output), otherwise its real values re-rounded.
    /// `.some(nil)`: no bias; nil: a bias the int8 engine cannot take (float initializer, computed value).
    private func quantizedBias(_ node: Node, inputScale: Float, weightScales: [Float], channels: Int) throws -> [Int32]?? {
        guard node.inputs.count > 2, !node.inputs[2].isEmpty else { return .some(nil) }
        guard let index = producer[node.inputs[2]], isConstantDequantization(graph.nodes[index]),
              let real = folded.initializers[node.inputs[2]]?.storage.floats, real.count == channels else { return nil }
        let dequantize = graph.nodes[index]
        let accumulatorScales = weightScales.map { Double(inputScale) * Double($0) }
        if case .int32(let codes)? = graph.initializers[dequantize.inputs[0]]?.storage,
           let scales = graph.initializers[dequantize.inputs[1]]?.storage.floats, scales.count == channels,
           zeroPoints(of: dequantize).allSatisfy({ $0 == 0 }),
           zip(scales, weightScales).allSatisfy({ $0 == inputScale * $1 }) {
            return .some(codes)
        }
        return .some(zip(real, accumulatorScales).map { value, scale in
            scale > 0 ? Int32(clamping: Int((Double(value) / scale).rounded(.toNearestOrEven))) : 0
        })
    }

    private func zeroPoints(of dequantize: Node) -> [Float] {
        guard dequantize.inputs.count > 2, !dequantize.inputs[2].isEmpty else { return [] }
        return graph.initializers[dequantize.inputs[2]]?.storage.floats ?? [1]
    }

    private func isConstantDequantization(_ node: Node) -> Bool {
        node.op == .dequantizeLinear && node.inputs.filter { !$0.isEmpty }.allSatisfy { graph.initializers[$0] != nil }
    }

    // MARK: - Float fallback

    private mutating func appendFloatNode(_ node: Node) throws {
        var inputs: [(name: String, slot: Int)] = []
        for name in node.inputs where !name.isEmpty && folded.initializers[name] == nil {
            guard let slot = floatSlots[name] else {
                throw Int8ExecutorError(node: node, "input '\(name)' is only available as int8 codes; the int8 engine runs this node in float and needs its dequantized value")
            }
            inputs.append((name, slot))
        }
        var outputs: [(name: String, slot: Int)] = []
        for name in node.outputs where !name.isEmpty { outputs.append((name, floatSlot(name))) }
        do {
            program.steps.append(try Int8FloatNodeStep.make(node: node, graph: folded, shapes: shapes, threads: threads,
                                                            inputSlots: inputs, outputSlots: outputs))
        } catch {
            throw Int8ExecutorError(node: node, "cannot run in float: \(error)")
        }
    }

    private mutating func floatSlot(_ name: String) -> Int {
        if let slot = floatSlots[name] { return slot }
        floatSlots[name] = floatSlots.count
        return floatSlots.count - 1
    }

    private func onlyReader(of value: String) -> Node? {
        guard let readers = consumers[value], readers.count == 1, !graph.outputs.contains(where: { $0.name == value }) else { return nil }
        return graph.nodes[readers[0]]
    }
}
