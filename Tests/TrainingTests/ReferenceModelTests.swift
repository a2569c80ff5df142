import Foundation
import Graph
import Inference
import Tensor
import Training
import XCTest

/// The real PyTorch-exported MobileNetV2-FMNIST (BN kept, as a for-training import leaves it): our eval-mode
/// forward equals the reference executor, and export → executor is identical.
///
/// TrainingTests do not link the ONNX importer, so the graph is converted to our model file by Python's `onnx`
/// and `safetensors` (the same route InferenceTests uses); skipped without the project's venv.
final class ReferenceModelTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let converter = """
        import json, sys
        import numpy as np, onnx
        from onnx import numpy_helper
        from safetensors.numpy import save_file
        model = onnx.load(sys.argv[1]); g = model.graph
        tensors = {i.name: np.ascontiguousarray(numpy_helper.to_array(i)) for i in g.initializer}
        def attr(a):
            if a.type == onnx.AttributeProto.INT: return {"i": a.i}
            if a.type == onnx.AttributeProto.FLOAT: return {"f": a.f}
            if a.type == onnx.AttributeProto.INTS: return {"ints": list(a.ints)}
            if a.type == onnx.AttributeProto.FLOATS: return {"floats": list(a.floats)}
            if a.type == onnx.AttributeProto.STRING: return {"s": a.s.decode()}
            raise SystemExit("unsupported attribute " + a.name)
        def info(v):
            return {"name": v.name, "dataType": "float32",
                    "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]}
        inits = set(tensors)
        graph = {"name": g.name or "model", "inputs": [info(v) for v in g.input if v.name not in inits],
                 "outputs": [info(v) for v in g.output],
                 "nodes": [{"name": n.name or n.output[0], "op": n.op_type, "inputs": list(n.input), "outputs": list(n.output),
                            "attributes": {a.name: attr(a) for a in n.attribute}} for n in g.node],
                 "initializers": [{"name": n, "tensor": n} for n in tensors], "valueInfo": [], "metadata": {}}
        save_file(tensors, sys.argv[2], metadata={"format": "qatflow", "qatflow.version": "1", "qatflow.graph": json.dumps(graph)})
        """

    func loadReferenceGraph() throws -> Graph {
        // QATFLOW_PYTHON (what `make test` sets), else the repository's own venv, as the other tests do.
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"].map { URL(fileURLWithPath: $0) }
            ?? Self.repository.appendingPathComponent(".venv/bin/python")
        guard FileManager.default.isExecutableFile(atPath: python.path) else { throw TrainingTestFailure("no Python venv at \(python.path): run `make venv`") }
        let candidates = [Self.repository.appendingPathComponent("models"), URL(fileURLWithPath: "/work/shared/models")]
            .map { $0.appendingPathComponent("mobilenetv2-fmnist-pytorch.onnx") }
        guard let model = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
            throw TrainingTestFailure("models/mobilenetv2-fmnist-pytorch.onnx not found")
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-training-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: output) }
        let process = Process()
        process.executableURL = python
        process.arguments = ["-c", Self.converter, model.path, output.path]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TrainingTestFailure("Python conversion failed (status \(process.terminationStatus))") }
        return try ModelFile.read(output)
    }

    func testPyTorchMobileNetV2EvalForwardMatchesExecutorAndExportIsIdentical() throws {
        let graph = try loadReferenceGraph()
        let model = try TrainableModel(graph: graph)
        XCTAssertEqual(model.parameterCount, 700_202)
        XCTAssertEqual(model.batchNormLayers.count, 52)
        XCTAssertEqual(model.batchNormLayers[0].momentum, 0.1, accuracy: 1e-6, "ONNX momentum 0.9 is PyTorch's 0.1")
        let input = randomTensor([4, 1, 32, 32], seed: 11, range: -1...2)
        let executor = try FloatExecutor(graph: graph)
        let reference = try executor.run(["input": input])["logits"]!
        let ours = try model.predict(input)
        XCTAssertLessThan(ours.maxAbsoluteDifference(reference), 1e-4)
        let exported = model.exportGraph()
        XCTAssertEqual(exported, graph)
        XCTAssertEqual(try FloatExecutor(graph: exported).run(["input": input])["logits"], reference)
    }
}

/// A missing prerequisite (venv, model, dataset) is a failure with a message, never a skip.
struct TrainingTestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
