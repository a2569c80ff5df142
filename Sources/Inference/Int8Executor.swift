import Foundation
import Graph
import Kernels
import Tensor

/// A failure while preparing or running a QDQ graph in the int8 engine; names the node when one is at fault.
public struct Int8ExecutorError: Error, CustomStringConvertible, Sendable {
    public var nodeName: String?
    public var op: OpType?
    public var message: String

    init(node: Node?, _ message: String) {
        nodeName = node?.name
        op = node?.op
        self.message = message
    }

    init(label: String?, _ message: String) {
        nodeName = label
        op = nil
        self.message = message
    }

    public var description: String {
        if let nodeName, let op { return "Int8Executor: node '\(nodeName)' (\(op.rawValue)): \(message)" }
        if let nodeName { return "Int8Executor: '\(nodeName)': \(message)" }
        return "Int8Executor: \(message)"
    }
}

/// The int8 engine: runs a quantized model (a QDQ `Graph`, docs/quantization.md) with the `Kernels` int8
/// kernels, u8 NHWC activations and fixed-point requantization, with the same contract as `FloatExecutor`
/// (float NCHW inputs, any batch in dimension 0; float outputs, NCHW for rank-4 outputs).
///
/// `init` prepares once: validation, pattern matching of Q/DQ chains into kernels, weight packing
/// (`Int8GraphCompiler`). Nodes no pattern covers run in float through the float executor between a dequantize
/// and a quantize step. The first `run` of a batch size plans its memory (`Int8Workspace`: one arena, buffers
/// reused between layers); later runs of that size allocate only the returned output tensors (plus the tensors
/// of float fallback nodes, if any). Runs are serialised. A batch larger than `batchChunk` runs as chunks of images
/// (`BatchChunks`): with `threads > 1` whole chunks go to each thread, each on its own workspace; with one thread
/// they run one after another. A smaller batch splits each kernel call over the threads instead.
public final class Int8Executor: @unchecked Sendable {
    public let graph: Graph
    public let threads: Int
    let program: Int8Program
    // `@unchecked Sendable` is sound: the workspaces (the only mutable state) are touched only under `runLock`,
    // which is held for a whole run.
    private let runLock = NSLock()
    private var workspaces: [WorkspaceKey: Int8Workspace] = [:]
    /// Workspaces kept: an evaluation uses one batch size plus a smaller last batch, and a chunked run one chunk
    /// size plus a smaller last chunk per thread.
    private static let keptWorkspaces = 8
    /// Images per chunk when a batch is split (0: never split, the graph may mix images); see `BatchChunks`.
    public let batchChunk: Int
    /// Chunk size by measurement (MobileNetV2-FMNIST, batch 32): on 2 threads chunks of 4, 8 and 16 all ran in
    /// 5.5 ms (per-kernel split: 8.6–10.5 ms); on 1 thread chunking neither helped nor hurt.
    public static let defaultBatchChunk = 8

    private struct WorkspaceKey: Hashable {
        var batch: Int
        var worker: Int
    }

    /// `batchChunk`: images per chunk of a large batch (nil: `defaultBatchChunk`, or `QATFLOW_INT8_BATCH_CHUNK` if
    /// set; 0: never split); ignored when the graph could mix images.
    public init(graph: Graph, threads: Int = 1, batchChunk: Int? = nil) throws {
        let validated: Graph
        do {
            validated = try graph.validated()
        } catch let error as GraphValidationError {
            throw Int8ExecutorError(label: error.nodeName, error.message)
        }
        guard validated.nodes.contains(where: { $0.op == .quantizeLinear }) else {
            throw Int8ExecutorError(node: nil, "'\(graph.name)' has no QuantizeLinear node: it is a float model, run it with FloatExecutor")
        }
        self.graph = validated
        self.threads = max(1, threads)
        var compiler = try Int8GraphCompiler(graph: validated, threads: self.threads)
        program = try compiler.compile()
        let separable = BatchSeparability.holds(for: validated, shapes: (try? ShapeInference.infer(validated)) ?? [:])
        let chunkOverride = ProcessInfo.processInfo.environment["QATFLOW_INT8_BATCH_CHUNK"].flatMap { Int($0) }
        self.batchChunk = separable ? max(0, batchChunk ?? chunkOverride ?? Self.defaultBatchChunk) : 0
    }

    /// Names of the nodes that run in float (no int8 pattern covers them), in execution order.
    public var floatFallbackNodes: [String] {
        program.steps.compactMap { ($0 as? Int8FloatNodeStep)?.label }
    }

    /// Number of int8 kernel calls per run (for reports and tests).
    public var kernelStepCount: Int {
        program.steps.filter { !($0 is Int8FloatNodeStep || $0 is Int8QuantizeStep || $0 is Int8DequantizeStep) }.count
    }

    /// Runs the model on `inputs` (one float tensor per graph input, any batch ≥ 1) and returns every graph output.
    public func run(_ inputs: [String: Tensor]) throws -> [String: Tensor] {
        var batch: Int?
        for declared in graph.inputs {
            guard let tensor = inputs[declared.name] else {
                throw Int8ExecutorError(node: nil, "missing input '\(declared.name)' (expected shape \(declared.shape))")
            }
            let fits = tensor.shape.count == declared.shape.count && tensor.shape.first.map { $0 >= 1 } == true
                && zip(tensor.shape, declared.shape).dropFirst().allSatisfy { $1 == -1 || $0 == $1 }
                && tensor.shape.reduce(1, *) == tensor.data.count
            guard fits else {
                throw Int8ExecutorError(node: nil, "input '\(declared.name)' has shape \(tensor.shape) with \(tensor.data.count) values, expected \(declared.shape) (any batch in dimension 0)")
            }
            guard batch == nil || batch == tensor.shape[0] else {
                throw Int8ExecutorError(node: nil, "inputs disagree on the batch size (\(batch!) and \(tensor.shape[0]))")
            }
            batch = tensor.shape[0]
        }
        for name in inputs.keys where !graph.inputs.contains(where: { $0.name == name }) {
            throw Int8ExecutorError(node: nil, "'\(name)' is not a graph input (inputs: \(graph.inputs.map(\.name)))")
        }

        runLock.lock()
        defer { runLock.unlock() }
        let images = batch ?? 1
        if batchChunk > 0, images > batchChunk {
            return try runInChunks(inputs, batch: images)
        }
        return try runSteps(inputs, on: workspace(batch: images, worker: 0), threads: threads)
    }

    /// The batch in chunks of `batchChunk` images, whole chunks per thread, each thread on its own workspaces.
    /// Call with `runLock` held.
    private func runInChunks(_ inputs: [String: Tensor], batch: Int) throws -> [String: Tensor] {
        let chunks = BatchChunks(batch: batch, size: batchChunk)
        let workers = min(threads, chunks.count)
        // Planned here, under the lock: the threads below only use them.
        var planned: [WorkspaceKey: Int8Workspace] = [:]
        for worker in 0..<workers {
            for size in Set((0..<chunks.count).map { chunks.range($0).count }) {
                planned[WorkspaceKey(batch: size, worker: worker)] = workspace(batch: size, worker: worker)
            }
        }
        let workspaces = planned
        let parts = try chunks.run(workers: workers) { chunk, worker in
            let part = chunks.slice(inputs, chunk: chunk)
            let workspace = workspaces[WorkspaceKey(batch: chunks.range(chunk).count, worker: worker)]!
            return try self.runSteps(part, on: workspace, threads: 1)
        }
        return chunks.join(parts, names: program.outputs.map(\.0))
    }

    /// Every step once on `workspace` (planned for the inputs' batch), which no other run uses meanwhile.
    private func runSteps(_ inputs: [String: Tensor], on workspace: Int8Workspace, threads: Int) throws -> [String: Tensor] {
        defer { for slot in workspace.floats.indices { workspace.floats[slot] = nil } }
        for (name, slot) in program.inputs { workspace.floats[slot] = inputs[name] }
        for step in program.steps {
            do {
                try step.run(in: workspace, threads: threads)
            } catch let error as Int8ExecutorError {
                throw error
            } catch {
                throw Int8ExecutorError(label: step.label, "\(error)")
            }
        }
        var outputs: [String: Tensor] = [:]
        for (name, slot) in program.outputs { outputs[name] = workspace.floats[slot] }
        return outputs
    }

    /// Arena bytes planned for `batch` images (plans it if needed).
    public func arenaByteCount(batch: Int) -> Int {
        runLock.lock()
        defer { runLock.unlock() }
        return workspace(batch: batch, worker: 0).arenaByteCount
    }

    /// Worker `worker`'s workspace of `batch` images, planned on first use. Call with `runLock` held.
    private func workspace(batch: Int, worker: Int) -> Int8Workspace {
        let key = WorkspaceKey(batch: batch, worker: worker)
        if let existing = workspaces[key] { return existing }
        if workspaces.count >= Self.keptWorkspaces, let evicted = workspaces.keys.first { workspaces[evicted] = nil }
        let created = Int8Workspace(program: program, batch: batch, threads: worker == 0 ? threads : 1)
        workspaces[key] = created
        return created
    }
}
