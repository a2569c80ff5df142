/// Geometry of a 2-D sliding window (convolution or pooling) over one NCHW image.
public struct WindowGeometry: Sendable, Equatable {
    public var kernelHeight: Int, kernelWidth: Int
    public var strideHeight: Int, strideWidth: Int
    public var padTop: Int, padLeft: Int, padBottom: Int, padRight: Int
    public var dilationHeight: Int, dilationWidth: Int

    public init(kernelHeight: Int, kernelWidth: Int, strideHeight: Int = 1, strideWidth: Int = 1,
                padTop: Int = 0, padLeft: Int = 0, padBottom: Int = 0, padRight: Int = 0,
                dilationHeight: Int = 1, dilationWidth: Int = 1) {
        self.kernelHeight = kernelHeight; self.kernelWidth = kernelWidth
        self.strideHeight = strideHeight; self.strideWidth = strideWidth
        self.padTop = padTop; self.padLeft = padLeft; self.padBottom = padBottom; self.padRight = padRight
        self.dilationHeight = dilationHeight; self.dilationWidth = dilationWidth
    }

    /// ONNX output size with floor rounding: `(in + pads - dilated kernel) / stride + 1`.
    public func outputHeight(inputHeight: Int) -> Int {
        (inputHeight + padTop + padBottom - ((kernelHeight - 1) * dilationHeight + 1)) / strideHeight + 1
    }

    public func outputWidth(inputWidth: Int) -> Int {
        (inputWidth + padLeft + padRight - ((kernelWidth - 1) * dilationWidth + 1)) / strideWidth + 1
    }

    /// True when the window is 1×1 with stride 1 and no padding: the image itself is the im2col matrix.
    public var isPointwise: Bool {
        kernelHeight == 1 && kernelWidth == 1 && strideHeight == 1 && strideWidth == 1
            && padTop == 0 && padLeft == 0 && padBottom == 0 && padRight == 0
    }
}

public enum Im2col {
    /// Unfolds `channels` planes of one image (`channels × height × width`) into the matrix
    /// `(channels·kH·kW) × (outH·outW)`, row `(c, ky, kx)`, zero where the window reads padding.
    public static func unfold(input: UnsafePointer<Float>, channels: Int, height: Int, width: Int,
                              geometry g: WindowGeometry, output: UnsafeMutablePointer<Float>) {
        let outH = g.outputHeight(inputHeight: height), outW = g.outputWidth(inputWidth: width)
        var row = output
        for c in 0..<channels {
            let plane = input + c * height * width
            for ky in 0..<g.kernelHeight {
                for kx in 0..<g.kernelWidth {
                    let offsetY = ky * g.dilationHeight - g.padTop
                    let offsetX = kx * g.dilationWidth - g.padLeft
                    for oy in 0..<outH {
                        let y = oy * g.strideHeight + offsetY
                        let destination = row + oy * outW
                        guard y >= 0 && y < height else {
                            destination.update(repeating: 0, count: outW)
                            continue
                        }
                        let source = plane + y * width
                        if g.strideWidth == 1 {
                            // Contiguous run: zero the padded ends, copy the middle.
                            let first = max(0, -offsetX), last = min(outW, width - offsetX)
                            if first > 0 { destination.update(repeating: 0, count: min(first, outW)) }
                            if last > first { (destination + first).update(from: source + first + offsetX, count: last - first) }
                            if last < outW { (destination + max(last, first)).update(repeating: 0, count: outW - max(last, first)) }
                        } else {
                            for ox in 0..<outW {
                                let x = ox * g.strideWidth + offsetX
                                destination[ox] = (x >= 0 && x < width) ? source[x] : 0
                            }
                        }
                    }
                    row += outH * outW
                }
            }
        }
    }
}
