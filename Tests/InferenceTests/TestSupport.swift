import Foundation
import Graph
import Inference
import Tensor
import XCTest

/// Deterministic pseudo-random numbers so failures reproduce.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func randomValues(_ count: Int, seed: UInt64, range: ClosedRange<Float> = -1...1) -> [Float] {
    var generator = SeededGenerator(seed: seed)
    return (0..<count).map { _ in Float.random(in: range, using: &generator) }
}

func randomTensor(_ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -1...1) -> Tensor {
    Tensor(shape: shape, data: randomValues(shape.reduce(1, *), seed: seed, range: range))
}

func floatInitializer(_ name: String, _ shape: [Int], seed: UInt64, range: ClosedRange<Float> = -1...1) -> Initializer {
    Initializer(name: name, shape: shape, storage: .float32(randomValues(shape.reduce(1, *), seed: seed, range: range)))
}

/// A graph of one node reading graph input "x" (plus initializers) and writing graph output "y".
func singleNodeGraph(_ op: OpType, inputShape: [Int], initializers: [Initializer] = [],
                     extraInputs: [String]? = nil, attributes: [String: AttributeValue] = [:]) -> Graph {
    let node = Node(name: "n0", op: op, inputs: ["x"] + (extraInputs ?? initializers.map(\.name)), outputs: ["y"],
                    attributes: attributes)
    return Graph(name: "single", inputs: [ValueInfo(name: "x", shape: inputShape)], outputs: [ValueInfo(name: "y", shape: [])],
                 nodes: [node], initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
}

func runSingle(_ graph: Graph, _ x: Tensor, threads: Int = 2, file: StaticString = #filePath, line: UInt = #line) throws -> Tensor {
    let executor = try FloatExecutor(graph: graph, threads: threads)
    return try XCTUnwrap(executor.run(["x": x])["y"], file: file, line: line)
}

func assertClose(_ actual: Tensor, _ expected: Tensor, tolerance: Float = 1e-4,
                 file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(actual.shape, expected.shape, "shape", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    var worst: Float = 0, worstIndex = 0
    for i in 0..<actual.count {
        let scale = max(1, abs(expected.data[i]))
        let d = abs(actual.data[i] - expected.data[i]) / scale
        if !(d <= worst) { worst = d; worstIndex = i }
    }
    XCTAssert(worst <= tolerance, "max relative difference \(worst) at \(worstIndex): \(actual.data[worstIndex]) vs \(expected.data[worstIndex])",
              file: file, line: line)
}

/// Naive references, written the obvious way.
enum Naive {
    static func conv(_ x: Tensor, weights w: [Float], wShape: [Int], bias: [Float]?, group: Int,
                     strides: [Int], pads: [Int], dilations: [Int] = [1, 1]) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (m, cg, kh, kw) = (wShape[0], wShape[1], wShape[2], wShape[3])
        let oh = (h + pads[0] + pads[2] - ((kh - 1) * dilations[0] + 1)) / strides[0] + 1
        let ow = (wd + pads[1] + pads[3] - ((kw - 1) * dilations[1] + 1)) / strides[1] + 1
        let mg = m / group
        var out = Tensor(zeros: [n, m, oh, ow])
        for b in 0..<n { for oc in 0..<m { for oy in 0..<oh { for ox in 0..<ow {
            let g = oc / mg
            var sum: Float = bias?[oc] ?? 0
            for ic in 0..<cg { for ky in 0..<kh { for kx in 0..<kw {
                let y = oy * strides[0] - pads[0] + ky * dilations[0]
                let xx = ox * strides[1] - pads[1] + kx * dilations[1]
                if y < 0 || y >= h || xx < 0 || xx >= wd { continue }
                let channel = g * cg + ic
                sum += x.data[((b * c + channel) * h + y) * wd + xx] * w[((oc * cg + ic) * kh + ky) * kw + kx]
            } } }
            out.data[((b * m + oc) * oh + oy) * ow + ox] = sum
        } } } }
        return out
    }

    static func matmul(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m { for j in 0..<n {
            var s: Float = 0
            for p in 0..<k { s += a[i * k + p] * b[p * n + j] }
            c[i * n + j] = s
        } }
        return c
    }

    static func transpose(_ a: [Float], rows: Int, columns: Int) -> [Float] {
        var t = [Float](repeating: 0, count: a.count)
        for i in 0..<rows { for j in 0..<columns { t[j * rows + i] = a[i * columns + j] } }
        return t
    }
}
