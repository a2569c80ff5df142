import Graph
import Tensor

/// MaxPool and AveragePool over 2-D windows (ceil_mode 0). Padding never wins a max; an average divides by the
/// number of real input elements in the window unless `count_include_pad` is 1.
struct PoolingOperator: FloatOperator {
    let isMax: Bool
    let countIncludePad: Bool
    let geometry: WindowGeometry

    init(node: Node) throws {
        let kernel = node.ints("kernel_shape") ?? []
        let window = try node.windowAttributes(kernel: kernel)
        isMax = node.op == .maxPool
        countIncludePad = node.int("count_include_pad", default: 0) != 0
        geometry = WindowGeometry(kernelHeight: kernel[0], kernelWidth: kernel[1],
                                  strideHeight: window.strides[0], strideWidth: window.strides[1],
                                  padTop: window.pads[0], padLeft: window.pads[1],
                                  padBottom: window.pads[2], padRight: window.pads[3])
    }

    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let threads = context.threads
        let x = try inputs.required(0)
        let (height, width) = (x.shape[2], x.shape[3])
        let g = geometry
        let outH = g.outputHeight(inputHeight: height), outW = g.outputWidth(inputWidth: width)
        let planes = x.shape[0] * x.shape[1]
        var output = context.buffer(count: planes * outH * outW, repeating: 0)
        x.data.withUnsafeBufferPointer { inputBuffer in
            output.withUnsafeMutableBufferPointer { outputBuffer in
                let source = Parallel.SharedPointer(inputBuffer.baseAddress!)
                let destination = Parallel.SharedMutablePointer(outputBuffer.baseAddress!)
                let work = planes * outH * outW * g.kernelHeight * g.kernelWidth
                Parallel.forEach(count: planes, threads: work >= 262_144 ? threads : 1) { plane in
                    let input = source.base + plane * height * width
                    let out = destination.base + plane * outH * outW
                    for oy in 0..<outH {
                        let y0 = oy * g.strideHeight - g.padTop
                        let yStart = max(y0, 0), yEnd = min(y0 + g.kernelHeight, height)
                        for ox in 0..<outW {
                            let x0 = ox * g.strideWidth - g.padLeft
                            let xStart = max(x0, 0), xEnd = min(x0 + g.kernelWidth, width)
                            if isMax {
                                var best = -Float.infinity
                                for y in yStart..<yEnd { for xx in xStart..<xEnd { best = max(best, input[y * width + xx]) } }
                                out[oy * outW + ox] = best
                            } else {
                                var sum: Float = 0
                                for y in yStart..<yEnd { for xx in xStart..<xEnd { sum += input[y * width + xx] } }
                                let count = countIncludePad ? g.kernelHeight * g.kernelWidth : (yEnd - yStart) * (xEnd - xStart)
                                out[oy * outW + ox] = sum / Float(count)
                            }
                        }
                    }
                }
            }
        }
        return [Tensor(shape: [x.shape[0], x.shape[1], outH, outW], data: output)]
    }
}

/// GlobalAveragePool: the mean of every spatial plane.
struct GlobalAveragePoolOperator: FloatOperator {
    func run(_ inputs: inout [Tensor?], outputShapes: [[Int]], context: ExecutionContext) throws -> [Tensor] {
        let x = try inputs.required(0)
        let planes = x.shape[0] * x.shape[1], spatial = x.shape.dropFirst(2).reduce(1, *)
        var output = context.buffer(count: planes, repeating: 0)
        x.data.withUnsafeBufferPointer { buffer in
            for plane in 0..<planes {
                var sum: Float = 0
                let base = buffer.baseAddress! + plane * spatial
                for i in 0..<spatial { sum += base[i] }
                output[plane] = sum / Float(spatial)
            }
        }
        return [Tensor(shape: outputShapes[0], data: output)]
    }
}
