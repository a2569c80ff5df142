import Graph
import Inference
import Tensor
import XCTest

final class ConvolutionTests: XCTestCase {
    struct Case {
        var input: [Int], outC: Int, kernel: [Int], group: Int, strides: [Int], pads: [Int]
        var dilations: [Int] = [1, 1]
        var bias = true
    }

    func check(_ c: Case, seed: UInt64, threads: Int = 2, file: StaticString = #filePath, line: UInt = #line) throws {
        let wShape = [c.outC, c.input[1] / c.group] + c.kernel
        let w = floatInitializer("w", wShape, seed: seed)
        let b = floatInitializer("b", [c.outC], seed: seed + 1)
        let graph = singleNodeGraph(.conv, inputShape: [-1] + c.input.dropFirst(), initializers: c.bias ? [w, b] : [w],
                                    attributes: ["group": .int(c.group), "strides": .ints(c.strides), "pads": .ints(c.pads),
                                                 "dilations": .ints(c.dilations), "kernel_shape": .ints(c.kernel)])
        let x = randomTensor(c.input, seed: seed + 2)
        let actual = try runSingle(graph, x, threads: threads, file: file, line: line)
        let expected = Naive.conv(x, weights: w.storage.floats, wShape: wShape, bias: c.bias ? b.storage.floats : nil,
                                  group: c.group, strides: c.strides, pads: c.pads, dilations: c.dilations)
        assertClose(actual, expected, file: file, line: line)
    }

    func testPlainConvolutionOddShapesBatch3() throws {
        try check(Case(input: [3, 5, 11, 9], outC: 7, kernel: [3, 3], group: 1, strides: [1, 1], pads: [1, 1, 1, 1]), seed: 1)
        try check(Case(input: [3, 5, 11, 9], outC: 7, kernel: [3, 2], group: 1, strides: [2, 2], pads: [1, 0, 2, 1]), seed: 2)
        try check(Case(input: [1, 3, 13, 13], outC: 13, kernel: [5, 5], group: 1, strides: [2, 1], pads: [2, 2, 2, 2], bias: false), seed: 3)
    }

    func testPointwiseAndGroupedConvolution() throws {
        try check(Case(input: [3, 8, 7, 5], outC: 12, kernel: [1, 1], group: 1, strides: [1, 1], pads: [0, 0, 0, 0]), seed: 4)
        try check(Case(input: [3, 8, 7, 5], outC: 12, kernel: [3, 3], group: 4, strides: [1, 1], pads: [1, 1, 1, 1]), seed: 5)
        try check(Case(input: [2, 6, 9, 9], outC: 6, kernel: [1, 1], group: 2, strides: [2, 2], pads: [0, 0, 0, 0]), seed: 6)
        try check(Case(input: [2, 4, 9, 9], outC: 8, kernel: [3, 3], group: 4, strides: [1, 1], pads: [1, 1, 1, 1]), seed: 7)
        try check(Case(input: [2, 4, 10, 10], outC: 5, kernel: [3, 3], group: 1, strides: [1, 1], pads: [2, 2, 2, 2], dilations: [2, 2]), seed: 8)
    }

    func testDepthwiseConvolution() throws {
        try check(Case(input: [3, 6, 11, 9], outC: 6, kernel: [3, 3], group: 6, strides: [1, 1], pads: [1, 1, 1, 1]), seed: 9)
        try check(Case(input: [3, 6, 11, 9], outC: 6, kernel: [3, 3], group: 6, strides: [2, 2], pads: [1, 1, 1, 1]), seed: 10)
        try check(Case(input: [1, 5, 8, 12], outC: 5, kernel: [5, 3], group: 5, strides: [2, 1], pads: [2, 0, 1, 3]), seed: 11, threads: 1)
        try check(Case(input: [2, 3, 9, 9], outC: 3, kernel: [3, 3], group: 3, strides: [1, 2], pads: [2, 2, 2, 2], dilations: [2, 2]), seed: 12)
        // Widths 21 (8+8+4+1 columns), 6 (4+2) and 3 (scalar only) cover every vector step of the stride-1 loop.
        for (width, seed) in [(21, UInt64(30)), (6, 31), (3, 32)] {
            try check(Case(input: [2, 4, 5, width], outC: 4, kernel: [3, 3], group: 4, strides: [1, 1], pads: [1, 1, 1, 1]), seed: seed)
        }
    }

    func testLargerConvolutionSplitsGEMMAcrossThreads() throws {
        // Batch 1 takes the threaded-GEMM path; depth > 256 exercises depth blocking.
        try check(Case(input: [1, 32, 20, 20], outC: 40, kernel: [3, 3], group: 1, strides: [1, 1], pads: [1, 1, 1, 1]), seed: 13)
    }
}
