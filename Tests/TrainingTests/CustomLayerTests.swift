import Graph
import Tensor
import Training
import XCTest

/// A differentiable operation defined outside the Training module with its public API (as QAT's fake
/// quantization will be): `y = x · s` with a trainable scalar `s`.
final class LearnedScale: Layer {
    let scale: Parameter

    init(name: String) {
        scale = Parameter(name: name, role: .weight, value: Tensor(shape: [1], data: [1.5]))
    }

    var parameters: [Parameter] { [scale] }

    func callAsFunction(_ inputs: [Variable], context: ForwardContext) -> Variable {
        let x = inputs[0], s = scale.variable
        let factor = s.value.data[0]
        let output = Variable(Tensor(shape: x.shape, data: x.value.data.map { $0 * factor }),
                              requiresGradient: context.needsGradient(x, s))
        context.record(output) {
            let dy = output.gradient
            if x.requiresGradient { x.addGradient(dy.map { $0 * factor }) }
            if s.requiresGradient {
                var total: Float = 0
                for i in 0..<dy.count { total += dy[i] * x.value.data[i] }
                s.accumulateGradient { $0[0] += total }
            }
        }
        return output
    }

    func export(into graph: inout Graph, node: inout Node) {
        node.attributes["learned_scale"] = .float(scale.value.data[0])
    }
}

final class CustomLayerTests: XCTestCase {
    func testCustomLayerReplacesANodeAndTrainsThroughTheTape() throws {
        let graph = ModelGraphTests.smallGraph()
        let model = try TrainableModel(graph: graph, rewriteLayers: { layers, graph in
            for (index, node) in graph.nodes.enumerated() where node.name == "relu0" { layers[index] = LearnedScale(name: "relu0.scale") }
        })
        XCTAssertTrue(model.layers[2] is LearnedScale)
        XCTAssertTrue(model.parameters.contains { $0.name == "relu0.scale" })
        let input = randomTensor([2, 2, 8, 8], seed: 3)
        let criterion = SoftmaxCrossEntropy()
        let checked = model.parameters.filter { ["relu0.scale", "w0", "g0"].contains($0.name) }
        // A small step: larger ones move some max-pool / clip inputs across their kinks.
        assertGradientsMatchFiniteDifferences(inputs: [], parameters: checked, step: 5e-4, tolerance: 5e-3) { context in
            criterion(try! model(input, context: context), labels: [0, 3], context: context).loss
        }
        let exported = try XCTUnwrap(model.exportGraph().nodes[2].attributes["learned_scale"]?.float)
        XCTAssertEqual(exported, 1.5, accuracy: 1e-5, "the custom layer's export hook ran")
    }

    /// A value transform (how QAT fake-quantizes activations) runs on the named value before any reader sees it,
    /// the graph input included, and its parameters join the model's.
    func testValueTransformsApplyToNamedValuesAndTrain() throws {
        let graph = ModelGraphTests.smallGraph()
        let inputName = graph.inputs[0].name, hidden = graph.nodes[0].outputs[0]
        let model = try TrainableModel(graph: graph, valueTransforms: [inputName: LearnedScale(name: "in.scale"),
                                                                       hidden: LearnedScale(name: "hidden.scale")])
        XCTAssertEqual(model.parameters.suffix(2).map(\.name), ["in.scale", "hidden.scale"])
        let plain = try TrainableModel(graph: graph)
        let input = randomTensor([2, 2, 8, 8], seed: 4)
        XCTAssertNotEqual(try model.predict(input).data, try plain.predict(input).data, "the transforms change the function")
        let criterion = SoftmaxCrossEntropy()
        assertGradientsMatchFiniteDifferences(inputs: [], parameters: Array(model.parameters.suffix(2)), step: 5e-4, tolerance: 5e-3) { context in
            criterion(try! model(input, context: context), labels: [0, 3], context: context).loss
        }
        XCTAssertThrowsError(try TrainableModel(graph: graph, valueTransforms: ["nowhere": LearnedScale(name: "x")])) { error in
            XCTAssertTrue("\(error)".contains("'nowhere'"), "\(error)")
        }
    }

    func testFunctionalConvolutionOnATapeValue() {
        // A weight computed on the tape (here 2·w) flows its gradient back to the parameter.
        let x = Variable(randomTensor([1, 2, 4, 4], seed: 5), requiresGradient: true)
        let w = Parameter(name: "w", role: .weight, value: randomTensor([3, 2, 3, 3], seed: 6))
        let geometry = WindowGeometry(kernelHeight: 3, kernelWidth: 3, padTop: 1, padLeft: 1, padBottom: 1, padRight: 1)
        assertGradientsMatchFiniteDifferences(inputs: [x], parameters: [w]) { context in
            let doubled = Functional.add(w.variable, w.variable, context: context)
            return Functional.conv2d(x, weight: doubled, bias: nil, geometry: geometry, context: context)
        }
    }
}
