import Tensor
import Training
import XCTest

/// Every layer's backward against central finite differences (small shapes).
final class LayerGradientTests: XCTestCase {
    func convolutionCheck(inputShape: [Int], weightShape: [Int], groups: Int, geometry: WindowGeometry, bias: Bool,
                          seed: UInt64) {
        let x = Variable(randomTensor(inputShape, seed: seed), requiresGradient: true)
        let weight = parameter("w", weightShape, seed: seed + 1)
        let biasParameter = bias ? parameter("b", [weightShape[0]], seed: seed + 2, role: .bias) : nil
        let conv = Conv2d(weight: weight, bias: biasParameter, geometry: geometry, groups: groups)
        assertGradientsMatchFiniteDifferences(inputs: [x], parameters: conv.parameters) { conv(x, context: $0) }
    }

    func testConvolution3x3Padded() {
        convolutionCheck(inputShape: [2, 3, 5, 5], weightShape: [4, 3, 3, 3], groups: 1,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
                         bias: true, seed: 10)
    }

    func testConvolutionStrideTwoAsymmetricPadding() {
        convolutionCheck(inputShape: [2, 2, 6, 5], weightShape: [3, 2, 3, 2], groups: 1,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 2, strideHeight: 2, strideWidth: 2,
                                                  padTop: 1, padLeft: 0, padBottom: 0, padRight: 1),
                         bias: false, seed: 20)
    }

    func testConvolutionGroupsAndDilation() {
        convolutionCheck(inputShape: [2, 4, 6, 6], weightShape: [6, 2, 3, 3], groups: 2,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3, padTop: 2, padLeft: 2, padBottom: 2, padRight: 2,
                                                  dilationHeight: 2, dilationWidth: 2),
                         bias: true, seed: 30)
    }

    func testPointwiseConvolution() {
        convolutionCheck(inputShape: [3, 5, 4, 4], weightShape: [7, 5, 1, 1], groups: 1,
                         geometry: WindowGeometry(kernelHeight: 1, kernelWidth: 1), bias: true, seed: 40)
    }

    /// 1×1 with full and edge tiles of the direct weight-gradient kernel, a plane (5×7) with a 16-lane tail, and
    /// a batch split into image blocks; then a grouped 1×1.
    func testPointwiseConvolutionWiderAndGrouped() {
        convolutionCheck(inputShape: [3, 9, 5, 7], weightShape: [6, 9, 1, 1], groups: 1,
                         geometry: WindowGeometry(kernelHeight: 1, kernelWidth: 1), bias: false, seed: 44)
        convolutionCheck(inputShape: [2, 6, 3, 3], weightShape: [4, 3, 1, 1], groups: 2,
                         geometry: WindowGeometry(kernelHeight: 1, kernelWidth: 1), bias: false, seed: 45)
    }

    func testDepthwiseConvolution() {
        convolutionCheck(inputShape: [2, 4, 5, 5], weightShape: [4, 1, 3, 3], groups: 4,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
                         bias: true, seed: 50)
    }

    func testDepthwiseConvolutionStrideTwo() {
        convolutionCheck(inputShape: [2, 3, 7, 6], weightShape: [3, 1, 3, 3], groups: 3,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3, strideHeight: 2, strideWidth: 2,
                                                  padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
                         bias: false, seed: 60)
    }

    func testDepthwiseConvolutionOtherWindows() {
        // 3×3 without padding (the C backward; dX as a forward pass with padding 2), 5×5 (the general loops), 3×3
        // on 9-wide rows (vector tails).
        convolutionCheck(inputShape: [2, 3, 6, 6], weightShape: [3, 1, 3, 3], groups: 3,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3), bias: true, seed: 61)
        convolutionCheck(inputShape: [2, 2, 6, 7], weightShape: [2, 1, 5, 5], groups: 2,
                         geometry: WindowGeometry(kernelHeight: 5, kernelWidth: 5, padTop: 2, padLeft: 2, padBottom: 2, padRight: 2),
                         bias: false, seed: 62)
        convolutionCheck(inputShape: [3, 2, 5, 9], weightShape: [2, 1, 3, 3], groups: 2,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
                         bias: true, seed: 63)
    }

    /// x feeds two depthwise convolutions whose outputs are added (a fan-out like a residual branch): the second
    /// backward to run adds to x's gradient instead of storing it.
    func testDepthwiseInputGradientFromTwoConsumers() {
        for stride in [1, 2] {
            let geometry = WindowGeometry(kernelHeight: 3, kernelWidth: 3, strideHeight: stride, strideWidth: stride,
                                          padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
            let x = Variable(randomTensor([2, 3, 6, 5], seed: UInt64(64 + stride)), requiresGradient: true)
            let first = Conv2d(weight: parameter("w1", [3, 1, 3, 3], seed: UInt64(66 + stride)), bias: nil,
                               geometry: geometry, groups: 3)
            let second = Conv2d(weight: parameter("w2", [3, 1, 3, 3], seed: UInt64(68 + stride)), bias: nil,
                                geometry: geometry, groups: 3)
            let sum = Addition()
            assertGradientsMatchFiniteDifferences(inputs: [x], parameters: first.parameters + second.parameters) { context in
                sum([first(x, context: context), second(x, context: context)], context: context)
            }
        }
    }

    func testDepthwiseWithChannelMultiplierUsesGroupedPath() {
        convolutionCheck(inputShape: [2, 2, 5, 5], weightShape: [4, 1, 3, 3], groups: 2,
                         geometry: WindowGeometry(kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1),
                         bias: true, seed: 70)
    }

    func batchNorm(channels: Int, seed: UInt64) -> BatchNorm2d {
        BatchNorm2d(scale: parameter("s", [channels], seed: seed, role: .normalizationScale, range: 0.5...1.5),
                    shift: parameter("t", [channels], seed: seed + 1, role: .normalizationShift),
                    statistics: BatchNormalizationStatistics(mean: randomValues(channels, seed: seed + 2),
                                                             variance: randomValues(channels, seed: seed + 3, range: 0.5...2)),
                    momentum: 0.1, epsilon: 1e-5, meanName: "m", varianceName: "v")
    }

    func testBatchNormTrainingMode() {
        let layer = batchNorm(channels: 3, seed: 80)
        let x = Variable(randomTensor([4, 3, 3, 2], seed: 84, range: -2...2), requiresGradient: true)
        assertGradientsMatchFiniteDifferences(inputs: [x], parameters: layer.parameters, step: 5e-3) { layer(x, context: $0) }
    }

    func testBatchNormEvaluationMode() {
        let layer = batchNorm(channels: 3, seed: 90)
        let x = Variable(randomTensor([2, 3, 3, 3], seed: 94), requiresGradient: true)
        let tape = GradientTape()
        let y = layer(x, context: ForwardContext(tape: tape, isTraining: false))
        let seed = randomValues(y.value.count, seed: 5)
        tape.backward(from: y, seed: seed)
        // Evaluation mode is affine per channel: dx = dy·γ/σ, dγ = Σ dy·x̂, dβ = Σ dy.
        let plane = 9
        for c in 0..<3 {
            let inverse = 1 / (layer.statistics.variance[c] + 1e-5).squareRoot()
            let gamma = layer.scale.value.data[c]
            var dGamma: Float = 0, dBeta: Float = 0
            for n in 0..<2 {
                for i in 0..<plane {
                    let index = (n * 3 + c) * plane + i
                    XCTAssertEqual(x.gradient[index], seed[index] * gamma * inverse, accuracy: 1e-5)
                    dGamma += seed[index] * (x.value.data[index] - layer.statistics.mean[c]) * inverse
                    dBeta += seed[index]
                }
            }
            XCTAssertEqual(layer.scale.gradient[c], dGamma, accuracy: 1e-4)
            XCTAssertEqual(layer.shift.gradient[c], dBeta, accuracy: 1e-4)
        }
    }

    /// QAT's folded convolution gives BatchNorm `a·x + b` (a: the inverse fold factor, any sign or zero) without
    /// materialising it: same output and running statistics as BatchNorm of the materialised tensor, in both
    /// modes, and gradients that match finite differences.
    func testBatchNormOfAnAffineInputEqualsBatchNormOfTheMaterialisedInput() {
        let a: [Float] = [2.5, -0.75, 0], b: [Float] = [0.3, -1.2, 0.8]
        let x = Variable(randomTensor([4, 3, 3, 2], seed: 110, range: -2...2), requiresGradient: true)
        var materialised = x.value.data
        for index in materialised.indices { let c = (index / 6) % 3; materialised[index] = a[c] * materialised[index] + b[c] }
        for training in [true, false] {
            let fused = batchNorm(channels: 3, seed: 111), plain = batchNorm(channels: 3, seed: 111)
            let context = ForwardContext(tape: nil, isTraining: training)
            let y = Functional.batchNorm(x, scale: fused.scale.variable, shift: fused.shift.variable, statistics: &fused.statistics,
                                         momentum: 0.1, epsilon: 1e-5, inputAffine: (a, b), context: context)
            let expected = Functional.batchNorm(Variable(Tensor(shape: x.shape, data: materialised)), scale: plain.scale.variable,
                                                shift: plain.shift.variable, statistics: &plain.statistics, momentum: 0.1,
                                                epsilon: 1e-5, context: context)
            XCTAssertLessThanOrEqual(y.value.maxAbsoluteDifference(expected.value), 1e-4, "training \(training)")
            for c in 0..<3 {
                XCTAssertEqual(fused.statistics.mean[c], plain.statistics.mean[c], accuracy: 1e-5, "training \(training)")
                XCTAssertEqual(fused.statistics.variance[c], plain.statistics.variance[c], accuracy: 1e-4, "training \(training)")
            }
        }
        for training in [true, false] {
            let layer = batchNorm(channels: 3, seed: 112)
            assertGradientsMatchFiniteDifferences(inputs: [x], parameters: layer.parameters, step: 5e-3) { context in
                let evaluation = ForwardContext(tape: context.tape, isTraining: training)
                return Functional.batchNorm(x, scale: layer.scale.variable, shift: layer.shift.variable, statistics: &layer.statistics,
                                            momentum: 0.1, epsilon: 1e-5, inputAffine: (a, b), context: training ? context : evaluation)
            }
        }
    }

    func testBatchNormRunningStatisticsFollowPyTorch() {
        let layer = batchNorm(channels: 1, seed: 100)
        layer.statistics = BatchNormalizationStatistics(mean: [1], variance: [2])
        let x = Variable(Tensor(shape: [2, 1, 1, 2], data: [1, 2, 3, 6]))
        _ = layer(x, context: ForwardContext(tape: nil, isTraining: true))
        // batch mean 3, unbiased variance (4 + 1 + 0 + 9) / 3.
        XCTAssertEqual(layer.statistics.mean[0], 0.9 * 1 + 0.1 * 3, accuracy: 1e-6)
        XCTAssertEqual(layer.statistics.variance[0], 0.9 * 2 + 0.1 * 14 / 3, accuracy: 1e-6)
    }

    func testReLUAndReLU6() {
        for layer in [Clamp.relu(), Clamp.relu6()] {
            let x = Variable(wellSeparatedTensor([2, 3, 4, 4], seed: 110, scale: 0.11, offset: 0.013), requiresGradient: true)
            assertGradientsMatchFiniteDifferences(inputs: [x], parameters: []) { layer(x, context: $0) }
        }
        let y = Clamp.relu6()(Variable(Tensor(shape: [4], data: [-1, 3, 6.5, 7])), context: ForwardContext(tape: nil, isTraining: false))
        XCTAssertEqual(y.value.data, [0, 3, 6, 6])
    }

    func testAdditionSumsGradientsOfASharedOperand() {
        let a = Variable(randomTensor([2, 3], seed: 120), requiresGradient: true)
        let b = Variable(randomTensor([2, 3], seed: 121), requiresGradient: true)
        let add = Addition()
        assertGradientsMatchFiniteDifferences(inputs: [a, b], parameters: []) { context in
            add([add([a, b], context: context), a], context: context)
        }
    }

    func testPooling() {
        let global = GlobalAveragePool()
        let x = Variable(wellSeparatedTensor([2, 3, 5, 5], seed: 130), requiresGradient: true)
        assertGradientsMatchFiniteDifferences(inputs: [x], parameters: []) { global(x, context: $0) }
        let padded = WindowGeometry(kernelHeight: 3, kernelWidth: 3, strideHeight: 2, strideWidth: 2,
                                    padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        for layer in [Pool2d(kind: .max, geometry: padded), Pool2d(kind: .average, geometry: padded),
                      Pool2d(kind: .average, geometry: padded, countIncludePad: true),
                      Pool2d(kind: .max, geometry: WindowGeometry(kernelHeight: 2, kernelWidth: 2, strideHeight: 2, strideWidth: 2))] {
            assertGradientsMatchFiniteDifferences(inputs: [x], parameters: []) { layer(x, context: $0) }
        }
    }

    func testLinearWithAlphaBeta() {
        let x = Variable(randomTensor([3, 5], seed: 140), requiresGradient: true)
        let layer = Linear(weight: parameter("w", [4, 5], seed: 141), bias: parameter("b", [4], seed: 142, role: .bias),
                           alpha: 0.7, beta: 1.3)
        assertGradientsMatchFiniteDifferences(inputs: [x], parameters: layer.parameters) { layer(x, context: $0) }
    }

    func testFlattenAndDropout() {
        let x = Variable(randomTensor([2, 3, 2, 2], seed: 150), requiresGradient: true)
        let flatten = Reshape(.flatten(axis: 1))
        let dropout = Dropout(ratio: 0.4)
        assertGradientsMatchFiniteDifferences(inputs: [x], parameters: []) { context in
            dropout(flatten(x, context: context), context: context)
        }
        let evaluation = dropout(x, context: ForwardContext(tape: nil, isTraining: false))
        XCTAssertEqual(evaluation.value, x.value, "dropout is the identity in evaluation")
        let trained = dropout(Variable(Tensor(shape: [10_000], repeating: 1)), context: ForwardContext(tape: nil, isTraining: true))
        let kept = trained.value.data.filter { $0 != 0 }
        XCTAssertEqual(Float(kept.count) / 10_000, 0.6, accuracy: 0.03)
        XCTAssertTrue(kept.allSatisfy { abs($0 - 1 / 0.6) < 1e-6 })
    }

    func testSoftmaxCrossEntropyWithLabelSmoothing() {
        let logits = Variable(randomTensor([4, 5], seed: 160, range: -3...3), requiresGradient: true)
        let labels = [0, 3, 4, 1]
        let criterion = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        assertGradientsMatchFiniteDifferences(inputs: [logits], parameters: [], step: 1e-2) { context in
            criterion(logits, labels: labels, context: context).loss
        }
        // Hand value for one row: logits [0, ln 3] → p = [1/4, 3/4]; target (label 1, ε 0.2) = [0.1, 0.9].
        let row = Variable(Tensor(shape: [1, 2], data: [0, Float(log(3.0))]))
        let (loss, correct) = SoftmaxCrossEntropy(labelSmoothing: 0.2)(row, labels: [1], context: ForwardContext(tape: nil, isTraining: false))
        XCTAssertEqual(loss.value.data[0], Float(-(0.1 * log(0.25) + 0.9 * log(0.75))), accuracy: 1e-6)
        XCTAssertEqual(correct, 1)
    }

    /// Distillation mixes a teacher's probabilities into the target: gradients still match finite differences,
    /// and weight 1 makes the loss the cross-entropy against the teacher alone.
    func testSoftmaxCrossEntropyWithTeacherProbabilities() {
        let logits = Variable(randomTensor([4, 5], seed: 161, range: -3...3), requiresGradient: true)
        let labels = [0, 3, 4, 1]
        let teacher = softmaxRows(randomTensor([4, 5], seed: 162, range: -2...2))
        XCTAssertEqual(teacher[0..<5].reduce(0, +), 1, accuracy: 1e-6)
        let criterion = SoftmaxCrossEntropy(labelSmoothing: 0.1)
        assertGradientsMatchFiniteDifferences(inputs: [logits], parameters: [], step: 1e-2) { context in
            criterion(logits, labels: labels, teacher: teacher, teacherWeight: 0.7, context: context).loss
        }
        // Hand value: logits [0, ln 3] → p = [1/4, 3/4]; teacher [0.6, 0.4] with weight 1 ignores the label.
        let row = Variable(Tensor(shape: [1, 2], data: [0, Float(log(3.0))]))
        let (loss, _) = SoftmaxCrossEntropy()(row, labels: [1], teacher: [0.6, 0.4], teacherWeight: 1,
                                             context: ForwardContext(tape: nil, isTraining: false))
        XCTAssertEqual(loss.value.data[0], Float(-(0.6 * log(0.25) + 0.4 * log(0.75))), accuracy: 1e-6)
    }
}
