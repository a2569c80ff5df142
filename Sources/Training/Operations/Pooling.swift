import Tensor

/// Max, average and global-average pooling with their gradients (ONNX semantics, ceil_mode 0: padding never
/// wins a max; an average divides by the real elements in the window unless `countIncludePad`).
enum Pooling {
    static func globalAverage(_ x: Variable, context: ForwardContext) -> Variable {
        let (batch, channels) = (x.shape[0], x.shape[1])
        let plane = x.shape.dropFirst(2).reduce(1, *)
        var output = [Float](repeating: 0, count: batch * channels)
        x.value.data.withUnsafeBufferPointer { input in
            for index in 0..<(batch * channels) {
                output[index] = VectorMath.sum(input.baseAddress! + index * plane, count: plane) / Float(plane)
            }
        }
        let outputShape = [batch, channels] + [Int](repeating: 1, count: x.shape.count - 2)
        let result = Variable(Tensor(shape: outputShape, data: output), requiresGradient: context.needsGradient(x))
        guard result.requiresGradient else { return result }
        context.record(result) {
            x.accumulateGradient { gradient in
                let dy = result.gradient
                for index in 0..<(batch * channels) {
                    let share = dy[index] / Float(plane), base = gradient + index * plane
                    for i in 0..<plane { base[i] += share }
                }
            }
        }
        return result
    }

    static func window(_ x: Variable, isMax: Bool, geometry g: WindowGeometry, countIncludePad: Bool,
                       context: ForwardContext) -> Variable {
        let (height, width) = (x.shape[2], x.shape[3])
        let outH = g.outputHeight(inputHeight: height), outW = g.outputWidth(inputWidth: width)
        let planes = x.shape[0] * x.shape[1]
        var output = [Float](repeating: 0, count: planes * outH * outW)
        // Max pooling remembers where each maximum came from (index within its plane) for backward.
        var argmax = [Int32](repeating: 0, count: isMax ? output.count : 0)
        x.value.data.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                argmax.withUnsafeMutableBufferPointer { positions in
                    let source = Parallel.SharedPointer(input.baseAddress!), target = Parallel.SharedMutablePointer(out.baseAddress!)
                    let where_ = positions.baseAddress.map { Parallel.SharedMutablePointer($0) }
                    Parallel.forEach(count: planes, threads: context.threads) { plane in
                        let image = source.base + plane * height * width
                        for oy in 0..<outH {
                            let y0 = oy * g.strideHeight - g.padTop
                            let yStart = max(y0, 0), yEnd = min(y0 + g.kernelHeight, height)
                            for ox in 0..<outW {
                                let x0 = ox * g.strideWidth - g.padLeft
                                let xStart = max(x0, 0), xEnd = min(x0 + g.kernelWidth, width)
                                let o = plane * outH * outW + oy * outW + ox
                                if isMax {
                                    var best = -Float.infinity, bestIndex = yStart * width + xStart
                                    for yy in yStart..<yEnd {
                                        for xx in xStart..<xEnd where image[yy * width + xx] > best {
                                            best = image[yy * width + xx]
                                            bestIndex = yy * width + xx
                                        }
                                    }
                                    target.base[o] = best
                                    where_!.base[o] = Int32(bestIndex)
                                } else {
                                    var sum: Float = 0
                                    for yy in yStart..<yEnd { for xx in xStart..<xEnd { sum += image[yy * width + xx] } }
                                    target.base[o] = sum / Float(divisor(g, countIncludePad, yStart, yEnd, xStart, xEnd))
                                }
                            }
                        }
                    }
                }
            }
        }
        let result = Variable(Tensor(shape: [x.shape[0], x.shape[1], outH, outW], data: output),
                              requiresGradient: context.needsGradient(x))
        guard result.requiresGradient else { return result }
        context.record(result) {
            x.accumulateGradient { gradient in
                let dy = result.gradient
                for plane in 0..<planes {
                    let image = gradient + plane * height * width
                    for oy in 0..<outH {
                        let y0 = oy * g.strideHeight - g.padTop
                        let yStart = max(y0, 0), yEnd = min(y0 + g.kernelHeight, height)
                        for ox in 0..<outW {
                            let o = plane * outH * outW + oy * outW + ox
                            if isMax {
                                image[Int(argmax[o])] += dy[o]
                                continue
                            }
                            let x0 = ox * g.strideWidth - g.padLeft
                            let xStart = max(x0, 0), xEnd = min(x0 + g.kernelWidth, width)
                            let share = dy[o] / Float(divisor(g, countIncludePad, yStart, yEnd, xStart, xEnd))
                            for yy in yStart..<yEnd { for xx in xStart..<xEnd { image[yy * width + xx] += share } }
                        }
                    }
                }
            }
        }
        return result
    }

    @inline(__always)
    private static func divisor(_ g: WindowGeometry, _ countIncludePad: Bool, _ yStart: Int, _ yEnd: Int,
                                _ xStart: Int, _ xEnd: Int) -> Int {
        countIncludePad ? g.kernelHeight * g.kernelWidth : (yEnd - yStart) * (xEnd - xStart)
    }
}
