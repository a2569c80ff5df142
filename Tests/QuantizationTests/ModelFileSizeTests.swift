import XCTest
import Datasets
import Graph
import ONNX
import Quantization

/// The model file's size on the real PyTorch MobileNetV2-FMNIST (issue #5). Not a timing test: sizes are
/// deterministic, so the limits are exact: W8A8 ≤ 27 % and 4-bit weights ≤ 15 % of the float file.
final class ModelFileSizeTests: XCTestCase {
    func testQuantizedMobileNetV2FilesAreSmall() throws {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let float = try ONNXImporter.importModel(at: repository.appendingPathComponent("models/mobilenetv2-fmnist-pytorch.onnx"), forTraining: true)
        let calibration = try DatasetLoader.load(try DatasetSpec(name: "fashion-mnist", split: .train, limit: 300), projectDirectory: repository)
        let floatBytes = try ModelFile.encode(float).count
        XCTAssertEqual(try ModelFile.read(data: ModelFile.encode(float), name: "float.safetensors"), float)
        for (weightBits, limit) in [(8, 0.27), (4, 0.15)] {
            let quantized = try PostTrainingQuantizer(config: QuantizationConfig(weightBits: weightBits, activationBits: 8))
                .quantize(float, calibration: calibration, batch: 100).graph
            let data = try ModelFile.encode(quantized)
            XCTAssertEqual(try ModelFile.read(data: data, name: "W\(weightBits)A8.safetensors"), quantized)
            let ratio = Double(data.count) / Double(floatBytes)
            print("MobileNetV2-FMNIST model file: float \(floatBytes) bytes, W\(weightBits)A8 \(data.count) bytes = \(String(format: "%.2f", ratio * 100)) %")
            XCTAssertLessThanOrEqual(ratio, limit, "W\(weightBits)A8")
        }
    }
}
