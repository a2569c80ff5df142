import Foundation
import Graph
import Tensor
import Training
import XCTest

func randomValues(_ count: Int, seed: UInt64, range: ClosedRange<Float> = -1...1) -> [Float] {
    var random = SeededRandom(seed: seed)
    return (0..<count).map { _ in range.lowerBound + (range.upperBound - range.lowerBound) * random.nextUniform() }
}

func randomTensor(_ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -1...1) -> Tensor {
    Tensor(shape: shape, data: randomValues(shape.reduce(1, *), seed: seed, range: range))
}

/// Values whose pairwise gaps are at least `gap` (a shuffled ramp), so max pooling has no near-ties and
/// ReLU/Clip inputs stay away from their kinks under finite-difference perturbations.
func wellSeparatedTensor(_ shape: [Int], seed: UInt64, scale: Float = 0.05, offset: Float = 0.0) -> Tensor {
    let count = shape.reduce(1, *)
    var random = SeededRandom(seed: seed)
    var ramp = (0..<count).map { Float($0) - Float(count) / 2 + 0.5 }
    ramp.shuffle(using: &random)
    return Tensor(shape: shape, data: ramp.map { $0 * scale + offset })
}

func parameter(_ name: String, _ shape: [Int], seed: UInt64, role: ParameterRole = .weight,
               range: ClosedRange<Float> = -1...1) -> Parameter {
    Parameter(name: name, role: role, value: randomTensor(shape, seed: seed, range: range))
}

/// Checks the tape's gradients of `f = Σ r ⊙ forward()` against central finite differences, for every element
/// of `inputs` and `parameters`. The perturbed forward passes evaluate `f` in Double from the Float outputs.
func assertGradientsMatchFiniteDifferences(
    inputs: [Variable], parameters: [Parameter], step h: Float = 1e-2, tolerance: Float = 2e-3,
    file: StaticString = #filePath, line: UInt = #line,
    _ forward: (ForwardContext) -> Variable
) {
    // Analytic (gradients left by an earlier check are cleared first: backward accumulates).
    let tape = GradientTape()
    let output = forward(ForwardContext(tape: tape, isTraining: true, threads: 2, random: SeededRandom(seed: 99)))
    let weights = randomValues(output.value.count, seed: 1234)
    for parameter in parameters { parameter.variable.zeroGradient() }
    for input in inputs { input.zeroGradient() }
    tape.backward(from: output, seed: weights)

    func objective() -> Double {
        let y = forward(ForwardContext(tape: nil, isTraining: true, threads: 2, random: SeededRandom(seed: 99)))
        var total: Double = 0
        for i in 0..<weights.count { total += Double(weights[i]) * Double(y.value.data[i]) }
        return total
    }
    func check(_ name: String, analytic: [Float], count: Int, perturb: (Int, Float) -> Void) {
        var worst: Float = 0, worstIndex = -1
        for i in 0..<count {
            perturb(i, h)
            let plus = objective()
            perturb(i, -2 * h)
            let minus = objective()
            perturb(i, h)
            let numeric = Float((plus - minus) / (2 * Double(h)))
            let value = analytic.isEmpty ? 0 : analytic[i]
            let error = abs(numeric - value) / max(1, abs(numeric))
            if error > worst { worst = error; worstIndex = i }
            if error > tolerance {
                XCTFail("\(name)[\(i)]: analytic \(value), numeric \(numeric)", file: file, line: line)
                return
            }
        }
        _ = worstIndex
    }
    for (k, input) in inputs.enumerated() {
        check("input \(k)", analytic: input.gradient, count: input.value.count) { i, delta in
            input.value.data[i] += delta
        }
    }
    for parameter in parameters {
        check(parameter.name, analytic: parameter.gradient, count: parameter.count) { i, delta in
            var value = parameter.value
            value.data[i] += delta
            parameter.value = value
        }
    }
}

/// Runs a graph through both our model (eval mode) and the reference executor.
func maximumDifference(_ a: Tensor, _ b: Tensor) -> Float {
    a.maxAbsoluteDifference(b)
}
