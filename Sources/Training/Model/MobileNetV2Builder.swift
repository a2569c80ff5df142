import Foundation
import Graph

/// Builds a MobileNetV2 `Graph` the way torchvision defines it (and names it, as `torch.onnx.export` does:
/// `/features/features.1/conv/conv.0/conv.0.0/Conv`, initializers `features.1.conv.0.0.weight`, …), with BN kept
/// and freshly initialised weights (torchvision's scheme: Kaiming-normal fan-out convolutions, BN 1/0,
/// classifier N(0, 0.01)).
public struct MobileNetV2Builder: Sendable {
    /// One stage of inverted residual blocks: expansion `t`, output channels `c`, repeats `n`, first stride `s`.
    public struct BlockSetting: Sendable, Equatable {
        public var expansion: Int, channels: Int, repeats: Int, stride: Int
        public init(_ expansion: Int, _ channels: Int, _ repeats: Int, _ stride: Int) {
            self.expansion = expansion; self.channels = channels; self.repeats = repeats; self.stride = stride
        }
    }

    public enum Activation: String, Sendable {
        /// Clip(0, 6), MobileNetV2's activation.
        case relu6
        /// Plain ReLU, as torchvision's quantizable MobileNetV2 (and the PyTorch reference model) uses.
        case relu
    }

    public static let imageNetSettings: [BlockSetting] = [
        .init(1, 16, 1, 1), .init(6, 24, 2, 2), .init(6, 32, 3, 2), .init(6, 64, 4, 2),
        .init(6, 96, 3, 1), .init(6, 160, 3, 2), .init(6, 320, 1, 1),
    ]

    /// The project's work model settings (32×32 Fashion-MNIST: the second stage keeps stride 1).
    public static let fashionMNISTSettings: [BlockSetting] = [
        .init(1, 16, 1, 1), .init(6, 24, 2, 1), .init(6, 32, 3, 2), .init(6, 64, 4, 2),
        .init(6, 96, 3, 1), .init(6, 160, 3, 2), .init(6, 320, 1, 1),
    ]

    public var widthMultiplier: Double = 1
    public var inputChannels: Int = 3
    public var inputHeight: Int = 224
    public var inputWidth: Int = 224
    public var stemChannels: Int = 32
    public var stemStride: Int = 2
    public var blockSettings: [BlockSetting] = imageNetSettings
    public var lastChannels: Int = 1280
    public var classes: Int = 1000
    public var dropout: Float = 0.2
    public var activation: Activation = .relu6
    public var seed: UInt64 = 0

    public init() {}

    /// The project's work model: width 0.5, 1×32×32, stem stride 1, Fashion-MNIST settings, 10 classes.
    public static func fashionMNISTWorkModel(seed: UInt64 = 0) -> MobileNetV2Builder {
        var builder = MobileNetV2Builder()
        builder.widthMultiplier = 0.5
        builder.inputChannels = 1
        builder.inputHeight = 32
        builder.inputWidth = 32
        builder.stemStride = 1
        builder.blockSettings = fashionMNISTSettings
        builder.classes = 10
        builder.seed = seed
        return builder
    }

    /// torchvision's `_make_divisible`: round to a multiple of 8 without losing more than 10 %.
    public static func makeDivisible(_ value: Double, divisor: Int = 8) -> Int {
        var rounded = max(divisor, Int(value + Double(divisor) / 2) / divisor * divisor)
        if Double(rounded) < 0.9 * value { rounded += divisor }
        return rounded
    }

    public func build() -> Graph {
        var emitter = GraphEmitter(random: SeededRandom(seed: seed), activation: activation)
        var channels = Self.makeDivisible(Double(stemChannels) * widthMultiplier)
        let last = Self.makeDivisible(Double(lastChannels) * max(1, widthMultiplier))
        var value = emitter.convBlock(input: "input", inChannels: inputChannels, outChannels: channels, kernel: 3,
                                      stride: stemStride, groups: 1, scope: ["features", "features.0"], prefix: "features.0")
        var index = 1
        for setting in blockSettings {
            let outChannels = Self.makeDivisible(Double(setting.channels) * widthMultiplier)
            for repeatIndex in 0..<setting.repeats {
                let stride = repeatIndex == 0 ? setting.stride : 1
                value = emitter.invertedResidual(input: value, inChannels: channels, outChannels: outChannels, stride: stride,
                                                 expansion: setting.expansion, index: index)
                channels = outChannels
                index += 1
            }
        }
        value = emitter.convBlock(input: value, inChannels: channels, outChannels: last, kernel: 1, stride: 1, groups: 1,
                                  scope: ["features", "features.\(index)"], prefix: "features.\(index)")
        value = emitter.node("/GlobalAveragePool", .globalAveragePool, [value])
        value = emitter.node("/Flatten", .flatten, [value], ["axis": .int(1)])
        value = emitter.node("/classifier/classifier.0/Dropout", .dropout, [value], ["ratio": .float(dropout)])
        emitter.linear(input: value, inFeatures: last, outFeatures: classes, output: "logits")
        return Graph(name: "mobilenetv2",
                     inputs: [ValueInfo(name: "input", shape: [-1, inputChannels, inputHeight, inputWidth])],
                     outputs: [ValueInfo(name: "logits", shape: [-1, classes])],
                     nodes: emitter.nodes, initializers: emitter.initializers,
                     metadata: ["producer": "qatflow MobileNetV2Builder",
                                "mobilenetv2.width": "\(widthMultiplier)", "mobilenetv2.seed": "\(seed)"])
    }
}

/// Appends nodes and initializers in PyTorch-export naming.
private struct GraphEmitter {
    var random: SeededRandom
    let activation: MobileNetV2Builder.Activation
    var nodes: [Node] = []
    var initializers: [String: Initializer] = [:]

    init(random: SeededRandom, activation: MobileNetV2Builder.Activation) {
        self.random = random
        self.activation = activation
    }

    mutating func node(_ name: String, _ op: OpType, _ inputs: [String], _ attributes: [String: AttributeValue] = [:],
                       output: String? = nil) -> String {
        let outputName = output ?? "\(name)_output_0"
        nodes.append(Node(name: name, op: op, inputs: inputs, outputs: [outputName], attributes: attributes))
        return outputName
    }

    mutating func initializer(_ name: String, _ shape: [Int], _ values: [Float]) -> String {
        initializers[name] = Initializer(name: name, shape: shape, storage: .float32(values))
        return name
    }

    /// Conv (no bias) → BN → activation, as torchvision's `Conv2dNormActivation` at `prefix` (`features.3.conv.0`).
    mutating func convBlock(input: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int, groups: Int,
                            scope: [String], prefix: String) -> String {
        var value = conv(input: input, inChannels: inChannels, outChannels: outChannels, kernel: kernel, stride: stride,
                         groups: groups, scope: scope + ["\(prefix).0"], prefix: "\(prefix).0")
        value = batchNorm(input: value, channels: outChannels, scope: scope + ["\(prefix).1"], prefix: "\(prefix).1")
        let path = "/" + (scope + ["\(prefix).2"]).joined(separator: "/")
        switch activation {
        case .relu6: return node(path + "/Clip", .clip, [value], ["min": .float(0), "max": .float(6)])
        case .relu: return node(path + "/Relu", .relu, [value])
        }
    }

    mutating func conv(input: String, inChannels: Int, outChannels: Int, kernel: Int, stride: Int, groups: Int,
                       scope: [String], prefix: String) -> String {
        let shape = [outChannels, inChannels / groups, kernel, kernel]
        // Kaiming normal, fan-out mode: std = √(2 / (outChannels·k·k)).
        let deviation = (2 / Float(outChannels * kernel * kernel)).squareRoot()
        let values = (0..<shape.reduce(1, *)).map { _ in random.nextNormal() * deviation }
        let weight = initializer("\(prefix).weight", shape, values)
        let pad = (kernel - 1) / 2
        return node("/" + scope.joined(separator: "/") + "/Conv", .conv, [input, weight], [
            "dilations": .ints([1, 1]), "group": .int(groups), "kernel_shape": .ints([kernel, kernel]),
            "pads": .ints([pad, pad, pad, pad]), "strides": .ints([stride, stride]),
        ])
    }

    mutating func batchNorm(input: String, channels: Int, scope: [String], prefix: String) -> String {
        let inputs = [input,
                      initializer("\(prefix).weight", [channels], [Float](repeating: 1, count: channels)),
                      initializer("\(prefix).bias", [channels], [Float](repeating: 0, count: channels)),
                      initializer("\(prefix).running_mean", [channels], [Float](repeating: 0, count: channels)),
                      initializer("\(prefix).running_var", [channels], [Float](repeating: 1, count: channels))]
        return node("/" + scope.joined(separator: "/") + "/BatchNormalization", .batchNormalization, inputs,
                    ["epsilon": .float(1e-5), "momentum": .float(0.9)])
    }

    mutating func invertedResidual(input: String, inChannels: Int, outChannels: Int, stride: Int, expansion: Int,
                                   index: Int) -> String {
        let hidden = inChannels * expansion
        let block = "features.\(index)"
        let scope = ["features", block, "conv"]
        var value = input
        var part = 0
        if expansion != 1 {
            value = convBlock(input: value, inChannels: inChannels, outChannels: hidden, kernel: 1, stride: 1, groups: 1,
                              scope: scope + ["conv.\(part)"], prefix: "\(block).conv.\(part)")
            part += 1
        }
        value = convBlock(input: value, inChannels: hidden, outChannels: hidden, kernel: 3, stride: stride, groups: hidden,
                          scope: scope + ["conv.\(part)"], prefix: "\(block).conv.\(part)")
        part += 1
        value = conv(input: value, inChannels: hidden, outChannels: outChannels, kernel: 1, stride: 1, groups: 1,
                     scope: scope + ["conv.\(part)"], prefix: "\(block).conv.\(part)")
        part += 1
        value = batchNorm(input: value, channels: outChannels, scope: scope + ["conv.\(part)"], prefix: "\(block).conv.\(part)")
        if stride == 1 && inChannels == outChannels {
            value = node("/features/\(block)/Add", .add, [input, value])
        }
        return value
    }

    mutating func linear(input: String, inFeatures: Int, outFeatures: Int, output: String) {
        let weight = initializer("classifier.1.weight", [outFeatures, inFeatures],
                                 (0..<(outFeatures * inFeatures)).map { _ in random.nextNormal() * 0.01 })
        let bias = initializer("classifier.1.bias", [outFeatures], [Float](repeating: 0, count: outFeatures))
        _ = node("/classifier/classifier.1/Gemm", .gemm, [input, weight, bias],
                 ["alpha": .float(1), "beta": .float(1), "transB": .int(1)], output: output)
    }
}
