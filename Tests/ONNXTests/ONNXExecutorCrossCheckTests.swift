import Foundation
import Graph
import Inference
import ONNX
import Tensor
import XCTest

/// Our float executor on the imported graph against ONNX Runtime on the original ONNX file, for every generated
/// model, the PyTorch MobileNetV2-FMNIST export and MobileNetV2-224, in both import forms.
final class ONNXExecutorCrossCheckTests: XCTestCase {
    static let tolerance: Float = 1e-4

    func testTrainingFormMatchesONNXRuntime() throws {
        try crossCheck(forTraining: true)
    }

    /// BN folded into Conv, Dropout and Identity removed: still the same function.
    func testInferenceFormMatchesONNXRuntime() throws {
        try crossCheck(forTraining: false)
    }

    private func crossCheck(forTraining: Bool) throws {
        let fixture = try ONNXTestCases.shared()
        var report: [String] = []
        for model in fixture.models {
            let graph = try ONNXImporter.importModel(at: URL(fileURLWithPath: model.file), forTraining: forTraining)
            var feeds: [String: Tensor] = [:]
            for input in model.inputs {
                feeds[input.name] = Tensor(shape: input.shape, data: try Float32File.read(fixture.directory.appendingPathComponent(input.file)))
            }
            let outputs: [String: Tensor]
            do {
                outputs = try FloatExecutor(graph: graph, threads: 2).run(feeds)
            } catch {
                XCTFail("\(model.name) (forTraining: \(forTraining)): the executor failed: \(error)")
                report.append("\(model.name): executor error")
                continue
            }
            var worst: Float = 0
            for output in model.outputs {
                let expected = try Float32File.read(fixture.directory.appendingPathComponent(output.file))
                guard let actual = outputs[output.name] else {
                    XCTFail("\(model.name): no output named \(output.name) (got \(outputs.keys.sorted()))")
                    continue
                }
                XCTAssertEqual(actual.shape, output.shape, "\(model.name) output \(output.name) shape")
                let difference = maxAbsoluteDifference(actual.data, expected)
                XCTAssertLessThanOrEqual(difference, Self.tolerance, "\(model.name) output \(output.name) (forTraining: \(forTraining))")
                worst = difference.isNaN ? .nan : max(worst, difference)
            }
            report.append("\(model.name): max |ours − ORT| \(worst)")
        }
        print("FloatExecutor vs ONNX Runtime (forTraining: \(forTraining)):\n  " + report.joined(separator: "\n  "))
    }
}
