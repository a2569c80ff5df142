import Datasets
import Foundation
import Graph
import Tensor
import Training
import XCTest

/// The training loop: it learns, it is reproducible, it stops cleanly on divergence.
final class TrainerTests: XCTestCase {
    /// conv 3×3 (a, stride 2) → BN → ReLU → conv 3×3 (b, stride 2) → BN → ReLU → GAP → Flatten → Gemm(10).
    static func tinyCNN(seed: UInt64, inputChannels: Int = 1, size: Int = 32, widths: (Int, Int) = (8, 16)) -> Graph {
        let (a, b) = widths
        var random = SeededRandom(seed: seed)
        func kaiming(_ shape: [Int]) -> [Float] {
            let fanIn = shape.dropFirst().reduce(1, *)
            return (0..<shape.reduce(1, *)).map { _ in random.nextNormal() * (2 / Float(fanIn)).squareRoot() }
        }
        func tensor(_ name: String, _ shape: [Int], _ values: [Float]) -> (String, Initializer) {
            (name, Initializer(name: name, shape: shape, storage: .float32(values)))
        }
        let conv: [String: AttributeValue] = ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1]), "strides": .ints([2, 2])]
        let nodes = [
            Node(name: "conv1", op: .conv, inputs: ["input", "w1"], outputs: ["c1"], attributes: conv),
            Node(name: "bn1", op: .batchNormalization, inputs: ["c1", "g1", "b1", "m1", "v1"], outputs: ["n1"]),
            Node(name: "relu1", op: .relu, inputs: ["n1"], outputs: ["r1"]),
            Node(name: "conv2", op: .conv, inputs: ["r1", "w2"], outputs: ["c2"], attributes: conv),
            Node(name: "bn2", op: .batchNormalization, inputs: ["c2", "g2", "b2", "m2", "v2"], outputs: ["n2"]),
            Node(name: "relu2", op: .relu, inputs: ["n2"], outputs: ["r2"]),
            Node(name: "gap", op: .globalAveragePool, inputs: ["r2"], outputs: ["g"]),
            Node(name: "flatten", op: .flatten, inputs: ["g"], outputs: ["f"]),
            Node(name: "fc", op: .gemm, inputs: ["f", "wf", "bf"], outputs: ["logits"], attributes: ["transB": .int(1)]),
        ]
        func filled(_ value: Float, _ count: Int) -> [Float] { [Float](repeating: value, count: count) }
        let initializers = Dictionary(uniqueKeysWithValues: [
            tensor("w1", [a, inputChannels, 3, 3], kaiming([a, inputChannels, 3, 3])),
            tensor("g1", [a], filled(1, a)), tensor("b1", [a], filled(0, a)), tensor("m1", [a], filled(0, a)), tensor("v1", [a], filled(1, a)),
            tensor("w2", [b, a, 3, 3], kaiming([b, a, 3, 3])),
            tensor("g2", [b], filled(1, b)), tensor("b2", [b], filled(0, b)), tensor("m2", [b], filled(0, b)), tensor("v2", [b], filled(1, b)),
            tensor("wf", [10, b], kaiming([10, b])), tensor("bf", [10], filled(0, 10)),
        ])
        return Graph(name: "tiny", inputs: [ValueInfo(name: "input", shape: [-1, inputChannels, size, size])],
                     outputs: [ValueInfo(name: "logits", shape: [-1, 10])], nodes: nodes, initializers: initializers)
    }

    /// The classic small Fashion-MNIST net: [conv 3×3 → BN → ReLU → MaxPool 2] × 2 → Flatten → Dropout → Gemm(10).
    static func smallCNN(seed: UInt64, widths: (Int, Int) = (16, 32)) -> Graph {
        var graph = tinyCNN(seed: seed, widths: widths)
        let same: [String: AttributeValue] = ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])]
        let pool: [String: AttributeValue] = ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]
        var random = SeededRandom(seed: seed + 1)
        let features = widths.1 * 8 * 8
        let classifier = (0..<(10 * features)).map { _ in random.nextNormal() * (1 / Float(features)).squareRoot() }
        graph.initializers["wf"] = Initializer(name: "wf", shape: [10, features], storage: .float32(classifier))
        graph.nodes = [
            Node(name: "conv1", op: .conv, inputs: ["input", "w1"], outputs: ["c1"], attributes: same),
            Node(name: "bn1", op: .batchNormalization, inputs: ["c1", "g1", "b1", "m1", "v1"], outputs: ["n1"]),
            Node(name: "relu1", op: .relu, inputs: ["n1"], outputs: ["r1"]),
            Node(name: "pool1", op: .maxPool, inputs: ["r1"], outputs: ["p1"], attributes: pool),
            Node(name: "conv2", op: .conv, inputs: ["p1", "w2"], outputs: ["c2"], attributes: same),
            Node(name: "bn2", op: .batchNormalization, inputs: ["c2", "g2", "b2", "m2", "v2"], outputs: ["n2"]),
            Node(name: "relu2", op: .relu, inputs: ["n2"], outputs: ["r2"]),
            Node(name: "pool2", op: .maxPool, inputs: ["r2"], outputs: ["p2"], attributes: pool),
            Node(name: "flatten", op: .flatten, inputs: ["p2"], outputs: ["f"]),
            Node(name: "drop", op: .dropout, inputs: ["f"], outputs: ["d"], attributes: ["ratio": .float(0.25)]),
            Node(name: "fc", op: .gemm, inputs: ["d", "wf", "bf"], outputs: ["logits"], attributes: ["transB": .int(1)]),
        ]
        return graph
    }

    func testTinyCNNLearnsFashionMNIST() throws {
        let spec = try DatasetSpec(name: "fashion-mnist", split: .train, limit: 2_000)
        let images: LabeledImages
        do {
            images = try DatasetLoader.load(spec, projectDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath))
        } catch {
            throw TrainingTestFailure("Fashion-MNIST not available (run `make datasets`): \(error)")
        }
        let model = try TrainableModel(graph: Self.smallCNN(seed: 1))
        let steps = 300
        let trainer = Trainer(model: model, optimizer: SGD(momentum: 0.9, nesterov: true, weightDecay: 1e-4),
                              schedule: OneCycleSchedule(maxRate: 0.05, totalSteps: steps), loss: SoftmaxCrossEntropy(labelSmoothing: 0.05),
                              seed: 1)
        trainer.gradientClipNorm = 5
        let black = Float((0 - spec.mean(ofChannel: 0)) / spec.std(ofChannel: 0))
        var batches = PrefetchingBatches(ShuffledBatches(images, batchSize: 32,
                                                         augmentation: Augmentation(cropPadding: 1, fillValue: black, horizontalFlip: true),
                                                         seed: 1))
        let before = try ModelEvaluation.evaluate(model, on: images)
        var reports: [TrainingProgress] = []
        try trainer.train(batches: &batches, steps: steps, reportEvery: 50) { reports.append($0) }
        let after = try ModelEvaluation.evaluate(model, on: images)
        XCTAssertEqual(reports.count, 6)
        XCTAssertEqual(reports.last?.step, steps)
        XCTAssertTrue(reports.allSatisfy { $0.imagesPerSecond > 0 && $0.loss.isFinite })
        XCTAssertLessThan(reports.last!.loss, 0.5 * reports.first!.loss, "training loss falls: \(reports.map(\.loss))")
        XCTAssertLessThan(after.loss, 0.5 * before.loss, "evaluation loss \(before.loss) → \(after.loss)")
        XCTAssertGreaterThan(after.accuracy, 0.8, "accuracy on the 2,000 training images")
        print("tiny CNN on 2,000 Fashion-MNIST images: loss \(before.loss) → \(after.loss), accuracy \(before.accuracy) → \(after.accuracy), "
              + "img/s \(reports.map { Int($0.imagesPerSecond) })")
    }

    func trainedWeights(seed: UInt64, threads: Int) throws -> [[Float]] {
        let images = try LabeledImages(count: 64, channels: 1, height: 12, width: 12,
                                       pixels: randomValues(64 * 144, seed: 77), labels: (0..<64).map { $0 % 10 },
                                       classNames: (0..<10).map(String.init))
        var graph = Self.tinyCNN(seed: seed, size: 12)
        graph.nodes.insert(Node(name: "drop", op: .dropout, inputs: ["f"], outputs: ["fd"], attributes: ["ratio": .float(0.2)]), at: 8)
        graph.nodes[9].inputs[0] = "fd"
        let model = try TrainableModel(graph: graph)
        let trainer = Trainer(model: model, optimizer: Adam(weightDecay: 1e-4), schedule: ConstantSchedule(0.01), threads: threads, seed: seed)
        var batches = ShuffledBatches(images, batchSize: 16, augmentation: Augmentation(cropPadding: 1, horizontalFlip: true), seed: seed)
        try trainer.train(batches: &batches, steps: 12)
        return model.parameters.map(\.value.data) + model.batchNormLayers.map(\.statistics.mean)
    }

    func testSameSeedGivesBitwiseIdenticalWeights() throws {
        let first = try trainedWeights(seed: 5, threads: 1)
        XCTAssertEqual(try trainedWeights(seed: 5, threads: 1), first)
        XCTAssertNotEqual(try trainedWeights(seed: 6, threads: 1), first)
    }

    func testDivergenceStopsWithAClearErrorAndKeepsTheLastGoodWeights() throws {
        let model = try TrainableModel(graph: Self.tinyCNN(seed: 2, size: 8))
        let trainer = Trainer(model: model, optimizer: SGD(), schedule: ConstantSchedule(1e6))
        let batch = Batch(images: randomTensor([8, 1, 8, 8], seed: 3), labels: [0, 1, 2, 3, 4, 5, 6, 7])
        var failure: TrainingDivergedError?
        var lastGood: [[Float]] = []
        var lastGoodStatistics: [BatchNormalizationStatistics] = []
        for _ in 0..<20 {
            lastGood = model.parameters.map(\.value.data)
            lastGoodStatistics = model.batchNormLayers.map(\.statistics)
            do {
                try trainer.trainStep(batch)
            } catch let error as TrainingDivergedError {
                failure = error
                break
            }
        }
        let error = try XCTUnwrap(failure, "a learning rate of 1e6 must diverge")
        XCTAssertTrue(error.description.contains("diverged at step \(error.step)"), error.description)
        XCTAssertEqual(model.parameters.map(\.value.data), lastGood, "the failing step's update is not applied")
        XCTAssertEqual(model.batchNormLayers.map(\.statistics), lastGoodStatistics, "nor its BN statistics update")
        XCTAssertTrue(lastGood.allSatisfy { $0.allSatisfy(\.isFinite) })
    }
}
