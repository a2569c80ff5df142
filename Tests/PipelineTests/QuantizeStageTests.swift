import Foundation
import Pipeline
import XCTest

/// The `quantize` stage's bias-correction and BN re-estimation parameters: mistakes are refused before any work,
/// in a manifest at their line and column, on the command line with a message and a non-zero exit.
final class QuantizeStageTests: XCTestCase {
    func makeProject() throws -> TemporaryProject { try TemporaryProject.withWorkModel() }

    func testReestimationOfAFoldedConversionIsAPlanErrorAtItsLocation() throws {
        let project = try makeProject()
        func plan(forTraining: Bool, _ with: String) throws {
            _ = try project.plan("""
                stages:
                  convert: {uses: convert, with: {model: models/m.onnx, for_training: \(forTraining)}}
                  quantize:
                    uses: quantize
                    needs: convert
                    with: {\(with)}
                """, registry: .production)
        }
        let folded = manifestErrors { try plan(forTraining: false, "bn_reestimate_images: 1000") }
        XCTAssertTrue(folded.contains("pipeline.yaml:6:34: error: stage 'quantize', parameter 'bn_reestimate_images': needs the model's BatchNormalization nodes, but stage 'convert' folds BN"), folded)
        XCTAssertTrue(folded.contains("for_training: true"), folded)
        XCTAssertNoThrow(try plan(forTraining: true, "bn_reestimate_images: 1000, bias_correction: true"))
        XCTAssertNoThrow(try plan(forTraining: false, "bias_correction: true"), "bias correction works on folded models")
        let images = manifestErrors { try plan(forTraining: true, "bias_correction: true, bias_correction_images: 0") }
        XCTAssertTrue(images.contains("parameter 'bias_correction_images': must be at least 1, got 0"), images)
    }

    func testQuantizeCommandRefusesReestimationOfAFoldedModel() throws {
        let project = try makeProject()
        let convert = try runQatflow(["convert", "models/m.onnx", "-o", "folded.safetensors"], in: project.directory)
        XCTAssertEqual(convert.status, 0, convert.stderr)
        let outcome = try runQatflow(["quantize", "folded.safetensors", "-o", "q.safetensors", "--bn-reestimate-images", "100"], in: project.directory)
        XCTAssertEqual(outcome.status, 1)
        XCTAssertTrue(outcome.stderr.contains("bn_reestimate_images needs the model's BatchNormalization nodes"), outcome.stderr)
        XCTAssertTrue(outcome.stderr.contains("--for-training"), outcome.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: project.directory.appendingPathComponent("q.safetensors").path))
    }
}
