import Foundation
import Graph
import Inference
import Tensor
import XCTest

/// Cross-checks against ONNX Runtime on the real PyTorch-exported MobileNetV2 (Fashion-MNIST) model.
///
/// The conversion is done in Python here on purpose (the ONNX importer is tested in its own target): the script
/// writes our model file with Python's `safetensors`, which also proves that files from other writers load.
final class ReferenceModelTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let converter = """
        import json, sys
        import numpy as np, onnx, onnxruntime as ort
        from onnx import numpy_helper
        from safetensors.numpy import save_file
        model_path, out_dir = sys.argv[1], sys.argv[2]
        model = onnx.load(model_path)
        g = model.graph
        tensors, refs = {}, []
        for init in g.initializer:
            tensors[init.name] = np.ascontiguousarray(numpy_helper.to_array(init))
            refs.append({"name": init.name, "tensor": init.name})
        def attr(a):
            if a.type == onnx.AttributeProto.INT: return {"i": a.i}
            if a.type == onnx.AttributeProto.FLOAT: return {"f": a.f}
            if a.type == onnx.AttributeProto.INTS: return {"ints": list(a.ints)}
            if a.type == onnx.AttributeProto.FLOATS: return {"floats": list(a.floats)}
            if a.type == onnx.AttributeProto.STRING: return {"s": a.s.decode()}
            raise SystemExit("unsupported attribute " + a.name)
        def info(v):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
            return {"name": v.name, "dataType": "float32", "shape": dims}
        nodes = [{"name": n.name or n.output[0], "op": n.op_type, "inputs": list(n.input), "outputs": list(n.output),
                  "attributes": {a.name: attr(a) for a in n.attribute}} for n in g.node]
        inits = {i.name for i in g.initializer}
        graph = {"name": g.name or "model", "inputs": [info(v) for v in g.input if v.name not in inits],
                 "outputs": [info(v) for v in g.output], "nodes": nodes, "initializers": refs, "valueInfo": [],
                 "metadata": {"producer": "ReferenceModelTests"}}
        save_file(tensors, out_dir + "/model.safetensors",
                  metadata={"format": "qatflow", "qatflow.version": "1", "qatflow.graph": json.dumps(graph)})
        x = np.random.default_rng(0).standard_normal((3, 1, 32, 32)).astype(np.float32)
        y = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
        x.tofile(out_dir + "/input.f32"); y.tofile(out_dir + "/expected.f32")
        print(json.dumps({"output_shape": list(y.shape)}))
        """

    func modelPath() -> URL? {
        var candidates: [URL] = []
        if let directory = ProcessInfo.processInfo.environment["QATFLOW_MODELS"] { candidates.append(URL(fileURLWithPath: directory)) }
        candidates += [Self.repository.appendingPathComponent("models"),
                       Self.repository.deletingLastPathComponent().appendingPathComponent("shared/models"),
                       URL(fileURLWithPath: "/work/shared/models")]
        return candidates.map { $0.appendingPathComponent("mobilenetv2-fmnist-pytorch.onnx") }
            .first { FileManager.default.fileExists(atPath: $0.path) }
    }

    func readFloats(_ url: URL) throws -> [Float] {
        let data = try Data(contentsOf: url)
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    func testMobileNetV2MatchesONNXRuntimeAndFoldingKeepsIt() throws {
        // QATFLOW_PYTHON (what `make test` sets), else the repository's own venv, as the other tests do.
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"].map { URL(fileURLWithPath: $0) }
            ?? Self.repository.appendingPathComponent(".venv/bin/python")
        guard FileManager.default.isExecutableFile(atPath: python.path) else { return XCTFail("no Python venv at \(python.path): run `make venv`") }
        guard let model = modelPath() else { return XCTFail("models/mobilenetv2-fmnist-pytorch.onnx not found (or set QATFLOW_MODELS)") }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-reference-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }

        let process = Process()
        process.executableURL = python
        process.arguments = ["-c", Self.converter, model.path, directory.path]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = Pipe()
        try process.run()
        let errorText = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        XCTAssertEqual(process.terminationStatus, 0, errorText)
        guard process.terminationStatus == 0 else { return }

        let graph = try ModelFile.read(directory.appendingPathComponent("model.safetensors"))
        let summary = try GraphSummary(graph: graph)
        XCTAssertEqual(summary.totalParameters, 700_202, "README: 700,202 parameters")
        let x = Tensor(shape: [3, 1, 32, 32], data: try readFloats(directory.appendingPathComponent("input.f32")))
        let expected = Tensor(shape: [3, 10], data: try readFloats(directory.appendingPathComponent("expected.f32")))

        let executor = try FloatExecutor(graph: graph)
        let actual = try XCTUnwrap(executor.run(["input": x])["logits"])
        XCTAssertLessThanOrEqual(actual.maxAbsoluteDifference(expected), 1e-3, "float executor vs ONNX Runtime")

        let folded = GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(graph))
        XCTAssertFalse(folded.nodes.contains { $0.op == .batchNormalization })
        let foldedExecutor = try FloatExecutor(graph: folded)
        let foldedOutput = try XCTUnwrap(foldedExecutor.run(["input": x])["logits"])
        XCTAssertLessThanOrEqual(foldedOutput.maxAbsoluteDifference(actual), 1e-3, "BN folding")

        // Round trip of the folded graph through our own writer.
        let url = directory.appendingPathComponent("folded.safetensors")
        try ModelFile.write(folded, to: url)
        XCTAssertEqual(try ModelFile.read(url), folded)

        // Throughput at batch 32 (printed, not asserted: shared machines vary).
        let batch = Tensor(shape: [32, 1, 32, 32], data: (0..<(32 * 1024)).map { Float(($0 * 37) % 255) / 255 })
        _ = try foldedExecutor.run(["input": batch])
        let start = Date()
        _ = try foldedExecutor.run(["input": batch])
        let seconds = Date().timeIntervalSince(start)
        print("FloatExecutor MobileNetV2-FMNIST (\(GraphSummary.formatOperations(summary.totalMultiplyAccumulates)) MACs/image), batch 32, "
              + "\(executor.threads) threads: \(String(format: "%.1f", seconds * 1000)) ms, \(Int(32 / seconds)) img/s")
    }
}
