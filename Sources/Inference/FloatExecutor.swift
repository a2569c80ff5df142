import Foundation
import Graph
import Tensor

/// A failure while preparing or running a graph; names the node when one is at fault.
public struct FloatExecutorError: Error, CustomStringConvertible, Sendable {
    public var nodeName: String?
    public var op: OpType?
    public var message: String

    public var description: String {
        if let nodeName, let op { return "node '\(nodeName)' (\(op.rawValue)): \(message)" }
        return "FloatExecutor: \(message)"
    }
}

/// The float32 reference executor: every `OpType`, ONNX semantics, NCHW.
///
/// `init` prepares once (validates, infers shapes with the dynamic batch, packs convolution weights, decodes
/// attributes); `run` accepts any batch size ≥ 1 in the first dimension of every input, infers concrete shapes
/// once per distinct input-shape combination (cached) and spreads work over `threads` threads.
/// Quantized (int8/uint8/int32) values are carried as float tensors holding integers.
public final class FloatExecutor: @unchecked Sendable {
    public let graph: Graph
    public let threads: Int
    /// The nodes as operator calls, with Conv → BatchNormalization → Relu/Clip chains fused (`ExecutionPlanner`).
    private let steps: [ExecutionStep]
    private let constants: [String: Tensor]
    /// For each step, the values whose last reader it is: dropped from the value store before the node runs (so it
    /// may reuse their buffers) and recycled after it, which bounds memory to the live values.
    private let releasedAfter: [Set<String>]
    // `@unchecked Sendable` is sound because the only mutable state, the shape cache and the idle buffer pools, is guarded by this lock.
    private let stateLock = NSLock()
    private var shapeCache: [[[Int]]: [String: ValueInfo]] = [:]
    /// Buffer pools of finished runs, reused by the next runs (one per concurrent run).
    private var idleContexts: [ExecutionContext] = []
    /// Images per sub-run when the batch is split (0: never split); see `BatchSeparability`.
    private let batchChunk: Int
    /// Per-step-kind timing when `QATFLOW_PROFILE=1`.
    private let profiler: StepProfiler? = StepProfiler.isRequested ? StepProfiler() : nil

    public init(graph: Graph, threads: Int = 2) throws {
        let validated: Graph
        do {
            // Quantized weights of a QDQ model are dequantized once here rather than on every run.
            validated = try GraphTransforms.foldConstantDequantization(graph).validated()
        } catch let error as GraphValidationError {
            throw FloatExecutorError(nodeName: error.nodeName, op: error.op, message: error.message)
        }
        self.graph = validated
        self.threads = max(1, threads)
        let shapes = try ShapeInference.infer(validated)
        steps = try ExecutionPlanner.plan(validated, shapes: shapes)
        let chunkOverride = ProcessInfo.processInfo.environment["QATFLOW_BATCH_CHUNK"].flatMap { Int($0) }
        batchChunk = BatchSeparability.holds(for: validated, shapes: shapes) ? max(0, chunkOverride ?? Self.defaultBatchChunk) : 0
        var constants: [String: Tensor] = [:]
        for (name, initializer) in validated.initializers {
            constants[name] = Tensor(shape: initializer.shape, data: initializer.storage.floats)
        }
        self.constants = constants
        var lastUse: [String: Int] = [:]
        for (index, step) in steps.enumerated() { for name in step.inputs where !name.isEmpty { lastUse[name] = index } }
        let keep = Set(validated.outputs.map(\.name))
        var released = [Set<String>](repeating: [], count: steps.count)
        for (name, index) in lastUse where !keep.contains(name) && constants[name] == nil { released[index].insert(name) }
        releasedAfter = released
    }

    /// Runs the graph on `inputs` (one tensor per graph input, any batch size) and returns every graph output.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        var values: [String: Tensor] = [:]
        var inputShapes: [[Int]] = []
        for declared in graph.inputs {
            guard let tensor = inputs[declared.name] else {
                throw FloatExecutorError(message: "missing input '\(declared.name)' (expected shape \(declared.shape))")
            }
            let compatible = tensor.shape.count == declared.shape.count && tensor.shape.enumerated().allSatisfy { axis, size in
                declared.shape[axis] == -1 || declared.shape[axis] == size || axis == 0
            } && tensor.shape.first.map { $0 >= 1 } ?? true
            guard compatible, tensor.shape.allSatisfy({ $0 >= 0 }), tensor.shape.reduce(1, *) == tensor.data.count else {
                throw FloatExecutorError(message: "input '\(declared.name)' has shape \(tensor.shape) with \(tensor.data.count) values, expected \(declared.shape) (any batch in dimension 0)")
            }
            values[declared.name] = tensor
            inputShapes.append(tensor.shape)
        }
        for name in inputs.keys where values[name] == nil {
            throw FloatExecutorError(message: "'\(name)' is not a graph input (inputs: \(graph.inputs.map(\.name)))")
        }
        let batch = inputShapes.first?.first ?? 1
        defer { profiler?.finishRun() }
        if batchChunk > 0, batch > batchChunk, inputShapes.allSatisfy({ $0.first == batch }) {
            return try runInChunks(values, batch: batch)
        }
        return try runWhole(values, inputShapes: inputShapes, threads: threads)
    }

    /// Images per sub-run: one image's largest activation (MobileNetV2-FMNIST: 96×32×32 floats, 384 KiB) then
    /// stays in L2 from the layer that writes it to the layer that reads it.
    static let defaultBatchChunk = 4

    /// The batch in chunks of `batchChunk` images; with several threads, whole chunks go to each thread (no
    /// hand-off per layer), otherwise one after another. Outputs are concatenated along dimension 0.
    private func runInChunks(_ inputs: [String: Tensor], batch: Int) throws -> [String: Tensor] {
        let chunks = BatchChunks(batch: batch, size: batchChunk)
        let workers = min(threads, chunks.count)
        let parts = try chunks.run(workers: workers) { chunk, _ in
            let part = chunks.slice(inputs, chunk: chunk)
            let shapes = try concreteShapes(for: graph.inputs.map { part[$0.name]!.shape })
            return try runSteps(part, shapes: shapes, threads: workers > 1 ? 1 : threads)
        }
        return chunks.join(parts, names: graph.outputs.map(\.name))
    }

    private func runWhole(_ inputs: [String: Tensor], inputShapes: [[Int]], threads: Int) throws -> [String: Tensor] {
        try runSteps(inputs, shapes: try concreteShapes(for: inputShapes), threads: threads)
    }

    /// Every step once over validated inputs.
    private func runSteps(_ inputs: [String: Tensor], shapes: [String: ValueInfo], threads: Int) throws -> [String: Tensor] {
        var values = inputs
        let context = borrowContext(threads: threads)
        defer { returnContext(context) }

        for (index, step) in steps.enumerated() {
            let node = step.node
            var operands: [Tensor?] = step.inputs.map { name in
                name.isEmpty ? nil : (values[name] ?? constants[name])
            }
            // Drop the store's reference to values read for the last time, so operators may reuse their buffers.
            for name in releasedAfter[index] { values[name] = nil }
            let outputShapes = step.outputs.map { shapes[$0]?.shape ?? [] }
            let results: [Tensor]
            let start = profiler == nil ? 0 : DispatchTime.now().uptimeNanoseconds
            let startCPU = profiler == nil ? 0 : StepProfiler.threadCPUNanoseconds()
            do {
                results = try step.implementation.run(&operands, outputShapes: outputShapes, context: context)
            } catch let failure as OperatorFailure {
                throw FloatExecutorError(nodeName: node.name, op: node.op, message: failure.message)
            }
            profiler?.record(step.label, nanoseconds: DispatchTime.now().uptimeNanoseconds - start,
                             cpuNanoseconds: StepProfiler.threadCPUNanoseconds() - startCPU)
            for (name, result) in zip(step.outputs, results) where !name.isEmpty { values[name] = result }
            // Buffers still shared (an aliasing Reshape output, the caller's input) are safe in the pool: copy on
            // write keeps them intact; recycle each name once so one buffer is not pooled twice.
            var recycled = Set<String>()
            for (operandIndex, name) in step.inputs.enumerated() where releasedAfter[index].contains(name) && recycled.insert(name).inserted {
                if let finished = operands[operandIndex] { context.recycle(finished) }
            }
        }
        var outputs: [String: Tensor] = [:]
        for output in graph.outputs { outputs[output.name] = values[output.name] ?? constants[output.name] }
        return outputs
    }

    deinit {
        if let profiler { FileHandle.standardError.write(profiler.report().data(using: .utf8)!) }
    }

    private func borrowContext(threads: Int) -> ExecutionContext {
        stateLock.lock()
        defer { stateLock.unlock() }
        if let index = idleContexts.lastIndex(where: { $0.threads == threads }) { return idleContexts.remove(at: index) }
        return ExecutionContext(threads: threads)
    }

    private func returnContext(_ context: ExecutionContext) {
        stateLock.lock()
        defer { stateLock.unlock() }
        idleContexts.append(context)
    }

    private func concreteShapes(for inputShapes: [[Int]]) throws -> [String: ValueInfo] {
        stateLock.lock()
        defer { stateLock.unlock() }
        if let cached = shapeCache[inputShapes] { return cached }
        var overrides: [String: [Int]] = [:]
        for (declared, shape) in zip(graph.inputs, inputShapes) { overrides[declared.name] = shape }
        do {
            let shapes = try ShapeInference.infer(graph, inputShapes: overrides)
            shapeCache[inputShapes] = shapes
            return shapes
        } catch let error as GraphValidationError {
            throw FloatExecutorError(nodeName: error.nodeName, op: error.op, message: "for input shapes \(inputShapes): \(error.message)")
        }
    }
}
