import Foundation
import Graph
import ONNX
import XCTest

/// import → `ONNXExporter` → ONNX Runtime must give ONNX Runtime's outputs on the original model: the importer's
/// folding and normalisation and the exporter's re-expansion together keep the function.
final class ONNXRoundTripTests: XCTestCase {
    static let tolerance: Float = 1e-4

    func testRoundTripForTrainingMatchesONNXRuntime() throws {
        try checkRoundTrip(forTraining: true, subdirectory: "roundtrip-training")
    }

    /// The inference form (BN folded, Dropout/Identity removed) exported and run by ORT.
    func testRoundTripInferenceFormMatchesONNXRuntime() throws {
        try checkRoundTrip(forTraining: false, subdirectory: "roundtrip-inference")
    }

    /// The newest opset the exporter writes (Pad's optional axes, BN without training outputs): same function.
    func testRoundTripAtOpset18MatchesONNXRuntime() throws {
        try checkRoundTrip(forTraining: true, subdirectory: "roundtrip-opset18", opset: 18)
    }

    func testExportWritesDynamicBatchAsDimParamAndKeepsNames() throws {
        let fixture = try ONNXTestCases.shared()
        let graph = try ONNXImporter.importModel(at: URL(fileURLWithPath: try fixture.named("mixed_pytorch_style").file), forTraining: true)
        XCTAssertEqual(graph.inputs.map(\.name), ["x"])
        XCTAssertEqual(graph.inputs[0].shape, [-1, 3, 12, 12])
        XCTAssertEqual(graph.outputs.map(\.name), ["probabilities"])
        let data = try ONNXExporter.export(graph)
        let reimported = try ONNXImporter.importModel(data: data, name: "reexported.onnx", forTraining: true)
        XCTAssertEqual(reimported.inputs, graph.inputs)
        XCTAssertEqual(reimported.outputs, graph.outputs)
        XCTAssertEqual(reimported.nodes, graph.nodes)
        XCTAssertEqual(reimported.initializers, graph.initializers)
        // The dim_param text itself: "N" appears in the serialized input type.
        XCTAssertNotNil(data.range(of: Data("N".utf8)))
    }

    func testWriteIsAtomicAndLeavesNoTemporaryFiles() throws {
        let fixture = try ONNXTestCases.shared()
        let graph = try ONNXImporter.importModel(at: URL(fileURLWithPath: try fixture.named("conv_basic").file), forTraining: true)
        let directory = fixture.directory.appendingPathComponent("atomic-write")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let target = directory.appendingPathComponent("model.onnx")
        try Data("old contents".utf8).write(to: target)
        try ONNXExporter.write(graph, to: target)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["model.onnx"])
        let reread = try ONNXImporter.importModel(at: target, forTraining: true)
        XCTAssertEqual(reread.nodes, graph.nodes)
        XCTAssertEqual(reread.initializers, graph.initializers)
    }

    func testExportRejectsOpsetsBefore13() throws {
        let graph = Graph(name: "g", inputs: [ValueInfo(name: "x", shape: [1])], outputs: [ValueInfo(name: "y", shape: [1])],
                          nodes: [Node(name: "relu", op: .relu, inputs: ["x"], outputs: ["y"])])
        XCTAssertThrowsError(try ONNXExporter.export(graph, opset: 11)) { error in
            XCTAssertTrue("\(error)".contains("opset 11"), "\(error)")
        }
        XCTAssertNoThrow(try ONNXExporter.export(graph, opset: 18))
    }

    private func checkRoundTrip(forTraining: Bool, subdirectory: String, opset: Int = 13) throws {
        let fixture = try ONNXTestCases.shared()
        let exportDirectory = fixture.directory.appendingPathComponent(subdirectory)
        try FileManager.default.createDirectory(at: exportDirectory, withIntermediateDirectories: true)
        for model in fixture.models {
            let graph = try ONNXImporter.importModel(at: URL(fileURLWithPath: model.file), forTraining: forTraining)
            try ONNXExporter.write(graph, to: exportDirectory.appendingPathComponent(model.name + ".onnx"), opset: opset)
        }
        try PythonScript.run(["run", fixture.directory.path, exportDirectory.path])
        let resultsData = try Data(contentsOf: exportDirectory.appendingPathComponent("results.json"))
        let results = try JSONDecoder().decode([String: RunResult].self, from: resultsData)

        var report: [String] = []
        for model in fixture.models {
            guard let result = results[model.name], result.ok else {
                XCTFail("\(model.name): ONNX Runtime rejected the exported model: \(results[model.name]?.error ?? "not run")")
                continue
            }
            var worst: Float = 0
            for (index, output) in model.outputs.enumerated() {
                let expected = try Float32File.read(fixture.directory.appendingPathComponent(output.file))
                let actual = try Float32File.read(exportDirectory.appendingPathComponent("\(model.name).out\(index).f32"))
                let difference = maxAbsoluteDifference(expected, actual)
                XCTAssertLessThanOrEqual(difference, Self.tolerance, "\(model.name) output \(output.name) (forTraining: \(forTraining))")
                worst = difference.isNaN ? .nan : max(worst, difference)
            }
            report.append("\(model.name): max |diff| \(worst)")
        }
        print("round trip (forTraining: \(forTraining), export opset \(opset)), import → export → ONNX Runtime vs ONNX Runtime:\n  " + report.joined(separator: "\n  "))
    }

    private struct RunResult: Decodable {
        let ok: Bool
        let error: String?
    }
}
