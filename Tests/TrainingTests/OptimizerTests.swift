import Foundation
import Tensor
import Training
import XCTest

/// Optimizers, schedules and clipping against steps computed by hand (PyTorch's update rules).
final class OptimizerTests: XCTestCase {
    func scalarParameter(_ value: Float, role: ParameterRole = .weight) -> Parameter {
        Parameter(name: "p", role: role, value: Tensor(shape: [1], data: [value]))
    }

    func step(_ optimizer: Optimizer, _ parameter: Parameter, gradient: Float, lr: Float) {
        parameter.gradient = [gradient]
        optimizer.step([parameter], learningRate: lr)
    }

    func testPlainSGDWithWeightDecay() {
        let p = scalarParameter(1)
        step(SGD(weightDecay: 0.1), p, gradient: 0.5, lr: 0.1)
        XCTAssertEqual(p.value.data[0], 1 - 0.1 * (0.5 + 0.1 * 1), accuracy: 1e-7)
    }

    func testSGDMomentumAndNesterov() {
        // Momentum 0.9, gradients 1 then 2, lr 0.1: b1 = 1, w1 = 1 − 0.1; b2 = 0.9 + 2 = 2.9, w2 = w1 − 0.29.
        let plain = scalarParameter(1), sgd = SGD(momentum: 0.9)
        step(sgd, plain, gradient: 1, lr: 0.1)
        XCTAssertEqual(plain.value.data[0], 0.9, accuracy: 1e-7)
        step(sgd, plain, gradient: 2, lr: 0.1)
        XCTAssertEqual(plain.value.data[0], 0.9 - 0.29, accuracy: 1e-6)
        // Nesterov: direction = g + μ·b: step 1: 1 + 0.9 = 1.9; step 2: 2 + 0.9·2.9 = 4.61.
        let nesterov = scalarParameter(1), sgdN = SGD(momentum: 0.9, nesterov: true)
        step(sgdN, nesterov, gradient: 1, lr: 0.1)
        XCTAssertEqual(nesterov.value.data[0], 1 - 0.19, accuracy: 1e-6)
        step(sgdN, nesterov, gradient: 2, lr: 0.1)
        XCTAssertEqual(nesterov.value.data[0], 1 - 0.19 - 0.461, accuracy: 1e-6)
    }

    func testWeightDecayScopeSkipsNormalizationAndBias() {
        let bias = scalarParameter(1, role: .bias)
        step(SGD(weightDecay: 0.5, weightDecayScope: .weightsOnly), bias, gradient: 0, lr: 0.1)
        XCTAssertEqual(bias.value.data[0], 1)
    }

    func testAdamAndAdamW() {
        // t = 1: m̂ = g, v̂ = g², so the step is lr·g/(|g| + ε) ≈ lr·sign(g).
        let p = scalarParameter(1), adam = Adam(weightDecay: 0.1)
        step(adam, p, gradient: 0.5, lr: 0.01)
        let g1: Float = 0.5 + 0.1 * 1
        XCTAssertEqual(p.value.data[0], 1 - 0.01 * g1 / (g1 + 1e-8), accuracy: 1e-6)
        // t = 2 by hand.
        let w1 = p.value.data[0]
        step(adam, p, gradient: -0.25, lr: 0.01)
        let g2: Float = -0.25 + 0.1 * w1
        let m: Float = 0.9 * (0.1 * g1) + 0.1 * g2
        let firstV: Float = 0.001 * g1 * g1
        let v: Float = 0.999 * firstV + 0.001 * g2 * g2
        let mHat: Float = m / (1 - 0.81)
        let vHat: Float = v / (1 - 0.999 * 0.999)
        let expected: Float = w1 - 0.01 * mHat / (vHat.squareRoot() + 1e-8)
        XCTAssertEqual(p.value.data[0], expected, accuracy: 1e-6)

        let q = scalarParameter(2), adamW = Adam.adamW(weightDecay: 0.1)
        step(adamW, q, gradient: 0.5, lr: 0.01)
        let decayed: Float = 2 * (1 - 0.01 * 0.1)
        XCTAssertEqual(q.value.data[0], decayed - 0.01 * 0.5 / (0.5 + 1e-8), accuracy: 1e-6)
    }

    func testParametersWithoutGradientAreLeftAlone() {
        let p = scalarParameter(3)
        p.gradient = []
        SGD(momentum: 0.9, weightDecay: 0.1).step([p], learningRate: 1)
        Adam(weightDecay: 0.1).step([p], learningRate: 1)
        XCTAssertEqual(p.value.data[0], 3)
    }

    func testSchedules() {
        XCTAssertEqual(ConstantSchedule(0.3).learningRate(at: 1000), 0.3)
        let stepSchedule = StepSchedule(base: 1, stepSize: 10, gamma: 0.5)
        XCTAssertEqual(stepSchedule.learningRate(at: 9), 1)
        XCTAssertEqual(stepSchedule.learningRate(at: 10), 0.5)
        XCTAssertEqual(stepSchedule.learningRate(at: 25), 0.25)

        let cosine = CosineSchedule(base: 1, totalSteps: 110, warmupSteps: 10, minimum: 0.1)
        XCTAssertEqual(cosine.learningRate(at: 0), 0)
        XCTAssertEqual(cosine.learningRate(at: 5), 0.5, accuracy: 1e-6)
        XCTAssertEqual(cosine.learningRate(at: 10), 1, accuracy: 1e-6)
        XCTAssertEqual(cosine.learningRate(at: 60), 0.55, accuracy: 1e-6)
        XCTAssertEqual(cosine.learningRate(at: 110), 0.1, accuracy: 1e-6)
        XCTAssertEqual(cosine.learningRate(at: 500), 0.1, accuracy: 1e-6)

        // PyTorch OneCycleLR(max_lr=1, total_steps=100): starts at 1/25, peaks at step 29, ends at 1/25/1e4.
        let oneCycle = OneCycleSchedule(maxRate: 1, totalSteps: 100)
        XCTAssertEqual(oneCycle.learningRate(at: 0), 0.04, accuracy: 1e-6)
        XCTAssertEqual(oneCycle.learningRate(at: 29), 1, accuracy: 1e-6)
        XCTAssertEqual(oneCycle.learningRate(at: 99), 4e-6, accuracy: 1e-9)
        let middle = oneCycle.learningRate(at: 64)  // halfway down: (1 + final)/2
        XCTAssertEqual(middle, (1 + 4e-6) / 2, accuracy: 1e-5)

        let inverse = InverseSchedule(base: 1e-4, gamma: 1e-4, power: 0.75)
        XCTAssertEqual(inverse.learningRate(at: 0), 1e-4)
        XCTAssertEqual(inverse.learningRate(at: 10_000), 1e-4 * Float(pow(2.0, -0.75)), accuracy: 1e-10)
    }

    func testGlobalNormClipping() {
        let a = Parameter(name: "a", role: .weight, value: Tensor(shape: [2], data: [0, 0]))
        let b = Parameter(name: "b", role: .bias, value: Tensor(shape: [1], data: [0]))
        a.gradient = [3, 0]
        b.gradient = [4]
        XCTAssertEqual(GradientClipping.clipGlobalNorm([a, b], maxNorm: 1), 5, accuracy: 1e-6)
        XCTAssertEqual(a.gradient[0], 0.6, accuracy: 1e-5)
        XCTAssertEqual(b.gradient[0], 0.8, accuracy: 1e-5)
        XCTAssertEqual(GradientClipping.clipGlobalNorm([a, b], maxNorm: 10), 1, accuracy: 1e-5)
        XCTAssertEqual(b.gradient[0], 0.8, accuracy: 1e-5, "below the limit nothing changes")
    }
}
