import Datasets
import Graph
import Foundation
import Pipeline
import XCTest

/// Issue #19 end to end on real files: a 3-channel model (the trained MobileNetV2 with its first convolution
/// repeated over R, G, B) is quantized from an unlabeled folder of RGB JPEGs and evaluated on a folder of class
/// subfolders; editing the folder re-runs only the stage that read it.
final class ImageDatasetPipelineTests: XCTestCase {
    static let manifest = """
        datasets:
          calib: {source: image-folder, path: data/calib, channels: rgb, pad: 2, mean: 0.2860, std: 0.3530}
          val: {source: image-folder, path: data/val, channels: rgb, pad: 2, mean: [0.2860, 0.2860, 0.2860], std: 0.3530}
        stages:
          convert: {uses: convert, with: {model: models/rgb.onnx}}
          quantize: {uses: quantize, needs: convert, with: {dataset: calib, images: 300}}
          evaluate: {uses: evaluate, needs: [convert, quantize], with: {dataset: val}}
        """

    @discardableResult
    func python(_ arguments: [String]) throws -> String {
        let python = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] ?? CLITests.repository.appendingPathComponent(".venv/bin/python").path
        guard FileManager.default.isExecutableFile(atPath: python) else { throw CLITestError("no Python venv at \(python): run make venv") }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        let errors = Pipe(), output = Pipe()
        process.standardError = errors
        process.standardOutput = output
        try process.run()
        let stdout = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CLITestError("\(arguments[0]) failed: \(stderr)") }
        return stdout
    }

    func testThreeChannelModelQuantizedFromAnUnlabeledJPEGFolder() throws {
        let project = try TemporaryProject()
        let models = project.directory.appendingPathComponent("models"), data = project.directory.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
        try python([CLITests.repository.appendingPathComponent("Tests/PipelineTests/Scripts/rgb_model.py").path,
                    CLITests.repository.appendingPathComponent("models/mobilenetv2-fmnist.onnx").path, models.appendingPathComponent("rgb.onnx").path])
        let idx = try DatasetLoader.locateFiles(for: try DatasetSpec(shorthand: "fashion-mnist:test"), projectDirectory: CLITests.repository).images.deletingLastPathComponent()
        try python([CLITests.repository.appendingPathComponent("Tests/DatasetsTests/Scripts/write_images.py").path, "jpegfolders", idx.path, data.path, "1000"])

        let record = try project.run(Self.manifest, registry: .production)
        let evaluate = try XCTUnwrap(record.stages.first { $0.stage == "evaluate" })
        let agreement = try XCTUnwrap(evaluate.metrics["agreement/quantize"]?.doubleValue)
        let float = try XCTUnwrap(evaluate.metrics["top1/convert"]?.doubleValue), int8 = try XCTUnwrap(evaluate.metrics["top1/quantize"]?.doubleValue)
        print("3-channel model on 1,000 RGB JPEGs: float \(float) %, W8A8 from 300 unlabeled JPEGs \(int8) % (int8 engine), int8 vs simulation agreement \(agreement) %")
        XCTAssertGreaterThanOrEqual(agreement, 99.9)
        XCTAssertGreaterThan(float, 93, "the trained model's accuracy, through JPEG")
        // ONNX Runtime on Pillow's decode of the same JPEGs: the same top-1 within 0.1 point (libjpeg-turbo's IDCT
        // may differ from Pillow's libjpeg by one level in a few pixels).
        let ort = try python([CLITests.repository.appendingPathComponent("Tests/PipelineTests/Scripts/ort_folder_eval.py").path,
                              models.appendingPathComponent("rgb.onnx").path, data.appendingPathComponent("val").path, "2", "0.2860", "0.3530"])
        let ortTop1 = try XCTUnwrap(Double(ort.trimmingCharacters(in: .whitespacesAndNewlines)))
        print("float top-1 on the 1,000 JPEGs: qatflow \(float) %, ONNX Runtime on Pillow's decode \(ortTop1) %")
        XCTAssertEqual(float, ortTop1, accuracy: 0.1)
        XCTAssertEqual(int8, float, accuracy: 0.5)

        // A changed image re-runs what read its folder, nothing else; a new one too.
        let image = data.appendingPathComponent("val").appendingPathComponent(try FileManager.default.contentsOfDirectory(atPath: data.appendingPathComponent("val").path).sorted()[0])
        let first = try FileManager.default.contentsOfDirectory(at: image, includingPropertiesForKeys: nil).sorted { $0.path < $1.path }[0]
        try FileManager.default.copyItem(at: first, to: image.appendingPathComponent("copy.jpg"))
        let second = try project.run(Self.manifest, registry: .production)
        XCTAssertEqual(second.stages.map(\.outcome), [.cached, .cached, .ran])
        XCTAssertEqual(second.stages.last?.metrics["images"], .int(1001))

        // The unlabeled folder cannot be evaluated; a 1-channel view of RGB data does not fit the model.
        for (stage, expected) in [("  bad: {uses: evaluate, needs: quantize, with: {dataset: calib}}\n", "no labels to evaluate against"),
                                  ("  bad: {uses: quantize, needs: convert, with: {dataset: gray}}\n", "takes N×3×32×32 images, but the dataset gives N×1×32×32")] {
            let manifest = Self.manifest.replacingOccurrences(of: "datasets:\n", with: "datasets:\n  gray: {source: image-folder, path: data/val, channels: gray, pad: 2}\n") + "\n" + stage
            XCTAssertThrowsError(try project.run(manifest, registry: .production)) { error in
                XCTAssertTrue("\(error)".contains(expected), "«\(expected)» in «\(error)»")
            }
        }
    }

    /// quantize and train record the preprocessing in the model file; `eval` and `infer --image` then apply it
    /// without flags. Training from a JPEG folder with random_resized_crop + flip streams and runs.
    func testModelRecordsItsPreprocessingAndCommandsReuseIt() throws {
        let project = try TemporaryProject()
        let directory = project.directory
        let models = directory.appendingPathComponent("models"), data = directory.appendingPathComponent("data")
        try FileManager.default.createDirectory(at: models, withIntermediateDirectories: true)
        try python([CLITests.repository.appendingPathComponent("Tests/PipelineTests/Scripts/rgb_model.py").path,
                    CLITests.repository.appendingPathComponent("models/mobilenetv2-fmnist.onnx").path, models.appendingPathComponent("rgb.onnx").path])
        let idx = try DatasetLoader.locateFiles(for: try DatasetSpec(shorthand: "fashion-mnist:test"), projectDirectory: CLITests.repository).images.deletingLastPathComponent()
        try python([CLITests.repository.appendingPathComponent("Tests/DatasetsTests/Scripts/write_images.py").path, "jpegfolders", idx.path, data.path, "200"])
        let preprocessing = ["--channels", "rgb", "--pad", "2", "--mean", "0.2860", "--std", "0.3530"]

        let quantize = try runQatflow(["quantize", "models/rgb.onnx", "-o", "q.safetensors", "--dataset", "data/calib", "--images", "100"] + preprocessing, in: directory)
        XCTAssertEqual(quantize.status, 0, quantize.stderr)
        let recorded = try XCTUnwrap(ImagePreprocessing(json: try ModelFile.read(directory.appendingPathComponent("q.safetensors")).metadata[ImagePreprocessing.metadataKey]))
        XCTAssertEqual(recorded.channels, .rgb)
        XCTAssertEqual([recorded.pad], [2])
        XCTAssertEqual(recorded.mean, [0.2860])

        // The model card takes the preprocessing the file records (the export command is given no dataset).
        let export = try runQatflow(["export", "q.safetensors", "-o", "q.qdq.onnx", "--card", "card.json"], in: directory)
        XCTAssertEqual(export.status, 0, export.stderr)
        let card = try JSONDecoder().decode(JSONValue.self, from: Data(contentsOf: directory.appendingPathComponent("card.json")))
        let cardPreprocessing = try XCTUnwrap(card.objectValue?["preprocessing"]?.objectValue)
        XCTAssertEqual(cardPreprocessing["channels"], .string("rgb"))
        XCTAssertEqual(cardPreprocessing["dataset"], .string("image-folder"))
        XCTAssertEqual(cardPreprocessing["from"], .string("recorded in the model file"))
        XCTAssertEqual(cardPreprocessing["pad"], .int(2))

        setenv("QATFLOW_DATASET_MEMORY_MB", "0", 1)  // the evaluation streams its images
        defer { unsetenv("QATFLOW_DATASET_MEMORY_MB") }
        let implicit = try runQatflow(["eval", "q.safetensors", "--dataset", "data/val", "--json"], in: directory)
        let explicit = try runQatflow(["eval", "q.safetensors", "--dataset", "data/val", "--json"] + preprocessing, in: directory)
        XCTAssertEqual(implicit.status, 0, implicit.stderr)
        XCTAssertEqual(explicit.status, 0, explicit.stderr)
        func top1(_ text: String) throws -> Double { try XCTUnwrap(JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)).objectValue?["top1"]?.doubleValue) }
        XCTAssertEqual(try top1(implicit.stdout), try top1(explicit.stdout), "the recorded preprocessing is the one given to quantize")
        XCTAssertGreaterThan(try top1(implicit.stdout), 90)
        let verbose = try runQatflow(["eval", "q.safetensors", "--dataset", "data/val", "--quiet"], in: directory)
        XCTAssertTrue(verbose.stderr.contains("preprocessing recorded in q.safetensors: rgb, pad 2"), verbose.stderr)

        let folder = data.appendingPathComponent("val")
        let classFolder = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()[0]
        let image = try FileManager.default.contentsOfDirectory(atPath: folder.appendingPathComponent(classFolder).path).sorted()[0]
        let infer = try runQatflow(["infer", "q.safetensors", "--image", "data/val/\(classFolder)/\(image)", "--output", "logits.npy"], in: directory)
        XCTAssertEqual(infer.status, 0, infer.stderr)
        XCTAssertEqual(try NPYArray.read(directory.appendingPathComponent("logits.npy")).shape, [1, 10])
        let unrecorded = try runQatflow(["infer", "models/rgb.onnx", "--image", "data/val/\(classFolder)/\(image)", "--output", "x.npy"], in: directory)
        XCTAssertNotEqual(unrecorded.status, 0)
        XCTAssertTrue(unrecorded.stderr.contains("records no preprocessing"), unrecorded.stderr)

        let train = try runQatflow(["train", "models/rgb.onnx", "-o", "t.safetensors", "--dataset", "data/val", "--channels", "rgb", "--pad", "2",
                                    "--mean", "0.2860", "--std", "0.3530", "--random-resized-crop", "28", "--flip", "--steps", "3", "--batch", "16",
                                    "--lr", "0.001", "--validation", "data/val", "--validation-images", "50", "--quiet"], in: directory)
        XCTAssertEqual(train.status, 0, train.stderr)
        let trained = try XCTUnwrap(ImagePreprocessing(json: try ModelFile.read(directory.appendingPathComponent("t.safetensors")).metadata[ImagePreprocessing.metadataKey]))
        XCTAssertEqual(trained.resize, [28], "random_resized_crop 28 is recorded as its deterministic form")
        XCTAssertEqual(trained.crop, 28)

        let missing = try runQatflow(["eval", "q.safetensors", "--dataset", "data/nowhere"], in: directory)
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("data/nowhere: no such folder"), missing.stderr)
    }
}
