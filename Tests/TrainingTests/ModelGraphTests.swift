import Foundation
import Graph
import Inference
import Tensor
import Training
import XCTest

/// Graph → TrainableModel → Graph: forward agrees with the reference executor, export round-trips.
final class ModelGraphTests: XCTestCase {
    /// A small graph using every trainable op: conv (plain, depthwise, strided), BN, ReLU, Clip, Add, pools,
    /// Flatten, Dropout, Gemm (transB 0, so export must transpose back).
    static func smallGraph() -> Graph {
        func initializer(_ name: String, _ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -0.5...0.5) -> Initializer {
            Initializer(name: name, shape: shape, storage: .float32(randomValues(shape.reduce(1, *), seed: seed, range: range)))
        }
        let same: [String: AttributeValue] = ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])]
        let nodes: [Node] = [
            Node(name: "conv0", op: .conv, inputs: ["x", "w0", "b0"], outputs: ["c0"], attributes: same),
            Node(name: "bn0", op: .batchNormalization, inputs: ["c0", "g0", "s0", "m0", "v0"], outputs: ["n0"],
                 attributes: ["epsilon": .float(1e-3), "momentum": .float(0.8)]),
            Node(name: "relu0", op: .relu, inputs: ["n0"], outputs: ["r0"]),
            Node(name: "dw", op: .conv, inputs: ["r0", "w1"], outputs: ["c1"], attributes: same.merging(["group": .int(4)]) { $1 }),
            Node(name: "clip", op: .clip, inputs: ["c1"], outputs: ["r1"], attributes: ["min": .float(0), "max": .float(6)]),
            Node(name: "add", op: .add, inputs: ["r0", "r1"], outputs: ["a"]),
            Node(name: "max", op: .maxPool, inputs: ["a"], outputs: ["p0"],
                 attributes: ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]),
            Node(name: "down", op: .conv, inputs: ["p0", "w2", "b2"], outputs: ["c2"],
                 attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1]), "strides": .ints([2, 2])]),
            Node(name: "avg", op: .averagePool, inputs: ["c2"], outputs: ["p1"],
                 attributes: ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])]),
            Node(name: "gap", op: .globalAveragePool, inputs: ["p1"], outputs: ["g"]),
            Node(name: "flatten", op: .flatten, inputs: ["g"], outputs: ["f"], attributes: ["axis": .int(1)]),
            Node(name: "drop", op: .dropout, inputs: ["f"], outputs: ["d"], attributes: ["ratio": .float(0.3)]),
            Node(name: "fc", op: .gemm, inputs: ["d", "wf", "bf"], outputs: ["y"], attributes: ["transB": .int(0), "alpha": .float(0.5)]),
        ]
        let initializers = [
            initializer("w0", [4, 2, 3, 3], seed: 1), initializer("b0", [4], seed: 2),
            initializer("g0", [4], seed: 3, range: 0.5...1.5), initializer("s0", [4], seed: 4),
            initializer("m0", [4], seed: 5), initializer("v0", [4], seed: 6, range: 0.5...2),
            initializer("w1", [4, 1, 3, 3], seed: 7), initializer("w2", [6, 4, 3, 3], seed: 8), initializer("b2", [6], seed: 9),
            initializer("wf", [6, 5], seed: 10), initializer("bf", [5], seed: 11),
        ]
        return Graph(name: "small", inputs: [ValueInfo(name: "x", shape: [-1, 2, 8, 8])], outputs: [ValueInfo(name: "y", shape: [-1, 5])],
                     nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
    }

    func testSmallGraphMatchesFloatExecutorAndExportRoundTrips() throws {
        let graph = Self.smallGraph()
        let model = try TrainableModel(graph: graph)
        let input = randomTensor([3, 2, 8, 8], seed: 42)
        let reference = try FloatExecutor(graph: graph).run(["x": input])["y"]!
        XCTAssertLessThan(try model.predict(input).maxAbsoluteDifference(reference), 1e-5)
        XCTAssertEqual(model.exportGraph(), graph, "export before training reproduces the source graph exactly")

        // Train a few steps (changes weights and BN statistics), then export and compare again.
        let trainer = Trainer(model: model, optimizer: SGD(momentum: 0.9), schedule: ConstantSchedule(0.05))
        for step in 0..<3 {
            try trainer.trainStep(Batch(images: randomTensor([4, 2, 8, 8], seed: UInt64(100 + step)), labels: [0, 1, 2, 3]))
        }
        let exported = model.exportGraph()
        XCTAssertNotEqual(exported.initializers["w0"], graph.initializers["w0"])
        XCTAssertNotEqual(exported.initializers["m0"], graph.initializers["m0"], "BN running mean is exported")
        XCTAssertEqual(exported.initializers["wf"]?.shape, [6, 5], "Gemm weight keeps its transB=0 layout")
        XCTAssertEqual(exported.nodes.map(\.name), graph.nodes.map(\.name))
        XCTAssertEqual(exported.nodes[1].attributes["momentum"], .float(0.8))
        let exportedOutput = try FloatExecutor(graph: exported).run(["x": input])["y"]!
        XCTAssertLessThan(try model.predict(input).maxAbsoluteDifference(exportedOutput), 1e-5)
        // The exported graph rebuilt into a model computes the same thing (bit-identical parameters).
        let rebuilt = try TrainableModel(graph: exported)
        XCTAssertEqual(try rebuilt.predict(input), try model.predict(input))
        // And it survives the model file.
        let file = try ModelFile.read(data: ModelFile.encode(exported), name: "memory")
        XCTAssertEqual(file.initializers, exported.initializers)
    }

    func testWholeModelGradientMatchesFiniteDifferences() throws {
        let model = try TrainableModel(graph: Self.smallGraph())
        let input = randomTensor([2, 2, 8, 8], seed: 7)
        let labels = [1, 4]
        let criterion = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        // Dropout is part of the graph; the helper replays the same random stream for every evaluation.
        let checked = model.parameters.filter { ["w0", "g0", "w1", "b2", "wf"].contains($0.name) }
        assertGradientsMatchFiniteDifferences(inputs: [], parameters: checked, step: 2e-3, tolerance: 5e-3) { context in
            let logits = try! model(input, context: context)
            return criterion(logits, labels: labels, context: context).loss
        }
    }

    func testFusedBatchNormActivationMatchesUnfused() throws {
        let graph = Self.smallGraph()
        let fused = try TrainableModel(graph: graph)
        let plain = try TrainableModel(graph: graph, fuseBatchNormActivation: false)
        XCTAssertTrue(fused.layers[2] is FusedActivation)
        XCTAssertTrue(plain.layers[2] is Clamp)
        let input = randomTensor([4, 2, 8, 8], seed: 9, range: -2...2)
        for training in [false, true] {
            var gradients: [[[Float]]] = []
            var outputs: [Tensor] = []
            for model in [fused, plain] {
                let tape = GradientTape()
                let context = ForwardContext(tape: tape, isTraining: training, random: SeededRandom(seed: 4))
                let loss = SoftmaxCrossEntropy()(try model(input, context: context), labels: [0, 1, 2, 3], context: context).loss
                model.zeroGradients()
                tape.backward(from: loss)
                outputs.append(loss.value)
                gradients.append(model.parameters.map(\.gradient))
            }
            XCTAssertEqual(outputs[0], outputs[1], "training \(training)")
            for (a, b) in zip(gradients[0], gradients[1]) {
                for (x, y) in zip(a, b) { XCTAssertEqual(x, y, accuracy: 1e-5 * max(1, abs(y))) }
            }
        }
        XCTAssertEqual(fused.exportGraph(), plain.exportGraph())
    }

    /// BN + ReLU/ReLU6 outputs read by one convolution are deferred (`BatchNorm2d.defersOutput`): each kind of
    /// reader computes them while reading — depthwise 3×3 at strides 1 and 2 (C kernels, forward and backward),
    /// 1×1, a full 3×3 convolution (im2col), and a 5×5 depthwise one, which reads `value` and so computes the
    /// whole tensor. BN input gradients are deferred to the convolutions that produced the BN inputs
    /// (`defersInputGradient`): depthwise 3×3 (C kernel), 1×1, full 3×3, and the 5×5 depthwise, which reads
    /// `gradient` and so computes it whole. Loss, every gradient, the running statistics and two optimizer steps must come out
    /// exactly as with everything stored.
    func testDeferredBatchNormOutputsMatchStoredOnes() throws {
        func initializer(_ name: String, _ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -0.5...0.5) -> Initializer {
            Initializer(name: name, shape: shape, storage: .float32(randomValues(shape.reduce(1, *), seed: seed, range: range)))
        }
        var nodes: [Node] = [], initializers: [Initializer] = []
        var seed: UInt64 = 1
        var value = "x"
        // conv → BN → clamp, `channels` out; returns the clamp's output name.
        func block(_ name: String, weight: [Int], attributes: [String: AttributeValue], relu6: Bool) {
            seed += 10
            let channels = weight[0]
            nodes.append(Node(name: name, op: .conv, inputs: [value, "\(name).w"], outputs: ["\(name).c"], attributes: attributes))
            nodes.append(Node(name: "\(name).bn", op: .batchNormalization,
                              inputs: ["\(name).c", "\(name).g", "\(name).b", "\(name).m", "\(name).v"], outputs: ["\(name).n"]))
            if relu6 {
                nodes.append(Node(name: "\(name).clip", op: .clip, inputs: ["\(name).n"], outputs: ["\(name).r"],
                                  attributes: ["min": .float(0), "max": .float(6)]))
            } else {
                nodes.append(Node(name: "\(name).relu", op: .relu, inputs: ["\(name).n"], outputs: ["\(name).r"]))
            }
            initializers += [initializer("\(name).w", weight, seed: seed), initializer("\(name).g", [channels], seed: seed + 1, range: 0.5...1.5),
                             initializer("\(name).b", [channels], seed: seed + 2), initializer("\(name).m", [channels], seed: seed + 3),
                             initializer("\(name).v", [channels], seed: seed + 4, range: 0.5...2)]
            value = "\(name).r"
        }
        let pad1: [String: AttributeValue] = ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1])]
        block("stem", weight: [6, 2, 3, 3], attributes: pad1, relu6: true)
        block("dw1", weight: [6, 1, 3, 3], attributes: pad1.merging(["group": .int(6)]) { $1 }, relu6: true)
        block("dw2", weight: [6, 1, 3, 3], attributes: pad1.merging(["group": .int(6), "strides": .ints([2, 2])]) { $1 }, relu6: false)
        block("pw", weight: [10, 6, 1, 1], attributes: ["kernel_shape": .ints([1, 1])], relu6: true)
        block("full", weight: [8, 10, 3, 3], attributes: pad1, relu6: false)
        block("dw5", weight: [8, 1, 5, 5], attributes: ["kernel_shape": .ints([5, 5]), "pads": .ints([2, 2, 2, 2]), "group": .int(8)], relu6: true)
        block("last", weight: [12, 8, 1, 1], attributes: ["kernel_shape": .ints([1, 1])], relu6: false)
        nodes.append(Node(name: "gap", op: .globalAveragePool, inputs: [value], outputs: ["g"]))
        nodes.append(Node(name: "flatten", op: .flatten, inputs: ["g"], outputs: ["f"], attributes: ["axis": .int(1)]))
        nodes.append(Node(name: "fc", op: .gemm, inputs: ["f", "wf", "bf"], outputs: ["y"], attributes: ["transB": .int(1)]))
        initializers += [initializer("wf", [5, 12], seed: 900), initializer("bf", [5], seed: 901)]
        let graph = Graph(name: "deferred", inputs: [ValueInfo(name: "x", shape: [-1, 2, 12, 12])],
                          outputs: [ValueInfo(name: "y", shape: [-1, 5])], nodes: nodes,
                          initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))

        let deferred = try TrainableModel(graph: graph), stored = try TrainableModel(graph: graph, deferBatchNormOutput: false)
        // Every BN but the last (read by the pool) defers; none does when asked not to.
        XCTAssertEqual(deferred.batchNormLayers.map(\.defersOutput), [true, true, true, true, true, true, false])
        XCTAssertFalse(stored.batchNormLayers.contains { $0.defersOutput })
        // Every BN leaves its input gradient to the convolution before it.
        XCTAssertTrue(deferred.batchNormLayers.allSatisfy(\.defersInputGradient))
        XCTAssertFalse(stored.batchNormLayers.contains { $0.defersInputGradient })
        let input = randomTensor([5, 2, 12, 12], seed: 77, range: -2...2)
        for threads in [1, 2] {
            var losses: [Tensor] = [], gradients: [[[Float]]] = []
            for model in [deferred, stored] {
                let tape = GradientTape()
                let context = ForwardContext(tape: tape, isTraining: true, threads: threads)
                let loss = SoftmaxCrossEntropy()(try model(input, context: context), labels: [0, 1, 2, 3, 4], context: context).loss
                model.zeroGradients()
                tape.backward(from: loss)
                losses.append(loss.value)
                gradients.append(model.parameters.map(\.gradient))
            }
            XCTAssertEqual(losses[0], losses[1], "threads \(threads)")
            XCTAssertEqual(gradients[0], gradients[1], "threads \(threads)")
            XCTAssertEqual(deferred.batchNormLayers.map(\.statistics), stored.batchNormLayers.map(\.statistics))
        }
        for model in [deferred, stored] {
            let trainer = Trainer(model: model, optimizer: SGD(momentum: 0.9), schedule: ConstantSchedule(0.05))
            for step in 0..<2 {
                try trainer.trainStep(Batch(images: randomTensor([4, 2, 12, 12], seed: UInt64(200 + step)), labels: [0, 1, 2, 3]))
            }
        }
        XCTAssertEqual(deferred.exportGraph(), stored.exportGraph())
        XCTAssertEqual(try deferred.predict(input), try stored.predict(input))
    }

    func testUnsupportedOperatorIsRefusedWithNodeName() {
        var graph = Self.smallGraph()
        graph.nodes[2].op = .softmax
        XCTAssertThrowsError(try TrainableModel(graph: graph)) { error in
            XCTAssertTrue("\(error)".contains("relu0"), "\(error)")
        }
    }

    func testMobileNetV2BuilderWorkModel() throws {
        let graph = MobileNetV2Builder.fashionMNISTWorkModel(seed: 3).build()
        let model = try TrainableModel(graph: graph)
        XCTAssertEqual(model.parameterCount, 700_202)
        XCTAssertEqual(graph.nodes.filter { $0.op == .conv }.count, 52)
        XCTAssertEqual(graph.nodes.filter { $0.op == .batchNormalization }.count, 52)
        XCTAssertEqual(graph.nodes.filter { $0.op == .add }.count, 10)
        XCTAssertEqual(graph.nodes[0].name, "/features/features.0/features.0.0/Conv")
        XCTAssertNotNil(graph.initializers["features.1.conv.0.0.weight"])
        XCTAssertNotNil(graph.initializers["features.17.conv.3.running_var"])
        XCTAssertEqual(graph.initializers["classifier.1.weight"]?.shape, [10, 1280])
        let summary = try ShapeInference.infer(graph)
        XCTAssertEqual(summary["logits"]?.shape, [-1, 10])
        // Same seed, same graph; the forward pass agrees with the reference executor (after a training step, so
        // BN statistics are not the trivial 0/1).
        XCTAssertEqual(MobileNetV2Builder.fashionMNISTWorkModel(seed: 3).build(), graph)
        let trainer = Trainer(model: model, optimizer: SGD(momentum: 0.9), schedule: ConstantSchedule(0.01))
        try trainer.trainStep(Batch(images: randomTensor([8, 1, 32, 32], seed: 5), labels: [0, 1, 2, 3, 4, 5, 6, 7]))
        let input = randomTensor([2, 1, 32, 32], seed: 6)
        let reference = try FloatExecutor(graph: model.exportGraph()).run(["input": input])["logits"]!
        XCTAssertLessThan(try model.predict(input).maxAbsoluteDifference(reference), 1e-4)
    }

    func testImageNetMobileNetV2HasTorchvisionParameterCount() throws {
        var builder = MobileNetV2Builder()
        builder.inputHeight = 64
        builder.inputWidth = 64
        XCTAssertEqual(try TrainableModel(graph: builder.build()).parameterCount, 3_504_872)
    }
}
