import Datasets
import Foundation
import Graph
import Inference
import ONNX
import Tensor
import XCTest
@testable import Quantization

/// Bias correction and BN re-estimation, PTQ's two optional steps after calibration (docs/quantization.md).
final class PTQCorrectionTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// Per layer output: the per-channel mean of (float − simulated) over `images`, both graphs run with those values exposed.
    static func meanErrors(_ outputs: [String], float: Graph, quantized: Graph, images: LabeledImages) throws -> [[Double]] {
        let input = Tensor(shape: [images.count, images.channels, images.height, images.width], data: images.batch(0..<images.count).pixels)
        let reference = try FloatExecutor(graph: PostTrainingQuantizer.exposing(outputs, in: float)).run([float.inputs[0].name: input])
        let simulated = try FloatExecutor(graph: PostTrainingQuantizer.exposing(outputs, in: quantized)).run([quantized.inputs[0].name: input])
        return try outputs.map { name in
            let a = try XCTUnwrap(reference[name]), b = try XCTUnwrap(simulated[name])
            let channels = a.shape[1], plane = a.shape.dropFirst(2).reduce(1, *)
            var sums = [Double](repeating: 0, count: channels)
            for i in a.data.indices { sums[(i / plane) % channels] += Double(a.data[i] - b.data[i]) }
            return sums.map { $0 / Double(a.shape[0] * plane) }
        }
    }

    /// After correction every quantized Conv/Gemm is unbiased on the correction images: each channel's mean error
    /// is within half a step of its int32 bias (the rounding the correction itself goes through), and smaller than
    /// without correction. Nothing but int32 biases changes, and a layer without a bias gets one.
    func testCorrectedLayersHaveNoMeanErrorOnTheCorrectionImages() throws {
        var graph = smallNetwork()
        graph.nodes[2].inputs.removeLast()  // the depthwise conv loses its bias
        graph.initializers["b2"] = nil
        let data = try randomImages(64, side: 12, seed: 11)
        let plainConfig = QuantizationConfig(weightBits: 4, activationBits: 4)
        var config = plainConfig
        config.biasCorrection = true
        config.biasCorrectionImages = 64
        let plain = try PostTrainingQuantizer(config: plainConfig).quantize(graph, calibration: data, batch: 16)
        let corrected = try PostTrainingQuantizer(config: config).quantize(graph, calibration: data, batch: 16)
        XCTAssertEqual(corrected.biasCorrection.map(\.node), ["conv1", "dw", "fc"])
        XCTAssertEqual(corrected.biasCorrectionImages, 64)
        XCTAssertTrue(corrected.biasCorrection.allSatisfy { $0.maxAbsoluteCorrection > 0 }, "\(corrected.biasCorrection)")

        let q = corrected.graph
        for (name, initializer) in plain.graph.initializers where !["b1::q", "fcb::q"].contains(name) {
            XCTAssertEqual(q.initializers[name], initializer, "\(name) must not change")
        }
        XCTAssertNotEqual(q.initializers["b1::q"], plain.graph.initializers["b1::q"])
        guard case .int32? = q.initializers["dw::bias::q"]?.storage else { return XCTFail("the depthwise conv got no int32 bias") }

        let outputs = ["c1", "c2", "logits"], biases = ["b1::q", "dw::bias::q", "fcb::q"]
        let after = try Self.meanErrors(outputs, float: graph, quantized: q, images: data)
        let before = try Self.meanErrors(outputs, float: graph, quantized: plain.graph, images: data)
        for (layer, name) in outputs.enumerated() {
            guard case .float32(let scales)? = q.initializers[biases[layer] + ".scale"]?.storage else { return XCTFail() }
            for (c, error) in after[layer].enumerated() {
                XCTAssertLessThanOrEqual(abs(error), 0.5 * Double(scales[c]) * 1.001 + 1e-6, "\(name) channel \(c)")
            }
            let residual = after[layer].map(abs).reduce(0, +), original = before[layer].map(abs).reduce(0, +)
            XCTAssertLessThan(residual, original, "\(name): bias correction must shrink the mean error")
        }
    }

    /// BN re-estimation runs the images in training mode without an optimizer step: only the BN running statistics
    /// change (all of them), every weight and every other initializer stays bit for bit.
    func testReestimationChangesOnlyBatchNormStatistics() throws {
        let graph = smallNetworkWithBatchNorm()
        let data = try randomImages(64, side: 12, seed: 12)
        let result = try BatchNormReestimation.run(graph: graph, config: QuantizationConfig(weightBits: 4, activationBits: 4),
                                                   calibration: data, images: data, batch: 16) { _, _, _ in }
        let statistics = Set(graph.nodes.filter { $0.op == .batchNormalization }.flatMap { $0.inputs[3...4] })
        XCTAssertEqual(statistics.count, 4)
        XCTAssertEqual(Set(result.graph.initializers.keys), Set(graph.initializers.keys))
        XCTAssertEqual(result.graph.nodes.map(\.name), graph.nodes.map(\.name))
        for (name, initializer) in graph.initializers {
            if statistics.contains(name) {
                XCTAssertNotEqual(result.graph.initializers[name], initializer, "\(name) is re-estimated")
            } else {
                XCTAssertEqual(result.graph.initializers[name], initializer, "\(name) must not change")
            }
        }
        XCTAssertEqual(result.summary.layers, 2)
        XCTAssertEqual(result.summary.images, 64)
        XCTAssertGreaterThan(result.summary.meanShift, 0)
    }

    /// The re-estimated running mean is the mean over all images (the image-weighted average of the batch means),
    /// whatever the batch split, and the variance differs from the starting one; frozen BN is refused.
    func testReestimatedStatisticsAreTheAverageOverAllImages() throws {
        let data = try randomImages(60, side: 12, seed: 14)
        func reestimated(batch: Int) throws -> (mean: [Float], variance: [Float], before: [Float]) {
            let qat = try QuantizationAwareModel(graph: smallNetworkWithBatchNorm(), configuration: QATConfiguration(), calibration: data, batch: 20)
            let before = qat.model.batchNormLayers[0].statistics.variance
            let summary = try qat.reestimateBatchNormStatistics(images: data, batch: batch)
            XCTAssertEqual(summary.images, 60)
            XCTAssertEqual(summary.layers, 2)
            XCTAssertTrue(qat.activationQuantizers.allSatisfy { !$0.isObserving }, "ranges stay frozen")
            let statistics = qat.model.batchNormLayers[0].statistics
            return (statistics.mean, statistics.variance, before)
        }
        let whole = try reestimated(batch: 60), split = try reestimated(batch: 16)  // 16, 16, 16, 12
        XCTAssertNotEqual(whole.variance, whole.before)
        for c in whole.mean.indices {
            XCTAssertEqual(split.mean[c], whole.mean[c], accuracy: 1e-4 * max(1, abs(whole.mean[c])), "channel \(c)")
        }

        let frozen = try QuantizationAwareModel(graph: smallNetworkWithBatchNorm(), configuration: QATConfiguration(), calibration: data, batch: 20)
        frozen.freezeBatchNorm()
        XCTAssertThrowsError(try frozen.reestimateBatchNormStatistics(images: data, batch: 16)) { error in
            XCTAssertTrue("\(error)".contains("BN statistics are frozen"), "\(error)")
        }
    }

    /// Re-estimation needs BatchNorm nodes: a folded model is refused with what to do.
    func testReestimationOfAFoldedModelIsAnError() throws {
        let data = try randomImages(16, side: 12, seed: 13)
        let config = QuantizationConfig(batchNormReestimationImages: 16)
        XCTAssertThrowsError(try PostTrainingQuantizer(config: config).quantize(smallNetwork(), calibration: data, batch: 16, training: data)) { error in
            XCTAssertTrue("\(error)".contains("BatchNormalization nodes"), "\(error)")
            XCTAssertTrue("\(error)".contains("for_training: true"), "\(error)")
        }
        XCTAssertThrowsError(try PostTrainingQuantizer(config: config).quantize(smallNetworkWithBatchNorm(), calibration: data, batch: 16)) { error in
            XCTAssertTrue("\(error)".contains("needs training images"), "\(error)")
        }
    }

    /// On the real MobileNetV2-FMNIST: W4A8 (mse) with bias correction is not worse than without on 2,000 test
    /// images, and W8A8 with BN re-estimation on 500 training images runs on the int8 engine with ≥ 99.9 %
    /// top-1 agreement to its simulation on the 10k test images. (300 calibration images, 500 re-estimation images: the test's time.)
    func testMobileNetV2BiasCorrectionAndReestimationOnTheInt8Engine() throws {
        let graph = try ONNXImporter.importModel(at: Self.repository.appendingPathComponent("models/mobilenetv2-fmnist-pytorch.onnx"), forTraining: true)
        let train = try DatasetLoader.load(try DatasetSpec(name: "fashion-mnist", split: .train), projectDirectory: Self.repository)
        let test = try DatasetLoader.load(try DatasetSpec(name: "fashion-mnist", split: .test, limit: 2000), projectDirectory: Self.repository)
        let calibration = try CalibrationSubset.take(300, from: train, seed: 0)

        /// Top-1 on the int8 engine, and the percentage of images whose top-1 class the simulation shares.
        func evaluate(_ quantized: Graph, simulate: Bool, on test: LabeledImages = test) throws -> (top1: Double, agreement: Double) {
            let int8 = try Int8Executor(graph: quantized, threads: 2)
            let simulation = simulate ? try FloatExecutor(graph: quantized, threads: 2) : nil
            var correct = 0, agree = 0
            func argmax(_ row: ArraySlice<Float>) -> Int { row.indices.max { row[$0] < row[$1] }! - row.startIndex }
            for start in stride(from: 0, to: test.count, by: 500) {
                let (pixels, labels) = test.batch(start..<min(start + 500, test.count))
                let input = ["input": Tensor(shape: [labels.count, 1, 32, 32], data: pixels)]
                let a = try int8.run(input)["logits"]!.data, b = try simulation?.run(input)["logits"]!.data
                for row in 0..<labels.count {
                    let range = row * 10..<(row + 1) * 10
                    if argmax(a[range]) == labels[row] { correct += 1 }
                    if let b, argmax(a[range]) == argmax(b[range]) { agree += 1 }
                }
            }
            return (100 * Double(correct) / Double(test.count), 100 * Double(agree) / Double(test.count))
        }

        var w4a8 = QuantizationConfig(weightBits: 4, activationBits: 8)
        let plain = try evaluate(try PostTrainingQuantizer(config: w4a8).quantize(graph, calibration: calibration, batch: 100).graph, simulate: false)
        w4a8.biasCorrection = true
        let correctedResult = try PostTrainingQuantizer(config: w4a8).quantize(graph, calibration: calibration, batch: 100)
        let corrected = try evaluate(correctedResult.graph, simulate: false)
        print("MobileNetV2-FMNIST W4A8 mse, 2,000 test images, int8 engine: \(plain.top1) % without, \(corrected.top1) % with bias correction")
        XCTAssertEqual(correctedResult.biasCorrection.count, 53)
        XCTAssertGreaterThanOrEqual(corrected.top1, plain.top1)

        let reestimation = QuantizationConfig(batchNormReestimationImages: 500)
        let reestimated = try PostTrainingQuantizer(config: reestimation).quantize(graph, calibration: calibration, batch: 100, training: train)
        XCTAssertEqual(reestimated.batchNormReestimation?.images, 500)
        XCTAssertEqual(reestimated.batchNormReestimation?.layers, 52)
        XCTAssertFalse(reestimated.graph.nodes.contains { $0.op == .batchNormalization })
        // Agreement is counted in whole images, so it is measured on all 10,000 (one image is 0.01 %).
        let allTest = try DatasetLoader.load(try DatasetSpec(name: "fashion-mnist", split: .test), projectDirectory: Self.repository)
        let engine = try evaluate(reestimated.graph, simulate: true, on: allTest)
        print("MobileNetV2-FMNIST W8A8 mse + BN re-estimation on 500 images, 10,000 test images: int8 \(engine.top1) %, agreement \(engine.agreement) %")
        XCTAssertGreaterThanOrEqual(engine.agreement, 99.9)
        XCTAssertGreaterThan(engine.top1, 90)
    }
}
