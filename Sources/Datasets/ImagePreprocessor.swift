/// Turns raw IDX bytes into the project's network input: zero-pad each side (pixel value 0, i.e. padding is
/// applied *before* normalising), then x = (pixel/255 − mean)/std, as one NCHW channel.
struct ImagePreprocessor {
    let pad: Int
    let mean: Double
    let std: Double

    /// Normalised value of every possible byte, so the hot loop is a table lookup instead of arithmetic.
    private var lookupTable: [Float] {
        (0...255).map { Float((Double($0) / 255 - mean) / std) }
    }

    func process(_ images: IDXImages, imageCount: Int) -> (height: Int, width: Int, pixels: [Float]) {
        precondition(imageCount <= images.count)
        let height = images.rows + 2 * pad
        let width = images.columns + 2 * pad
        let table = lookupTable
        let padValue = table[0]
        let sourceRows = images.rows
        let sourceColumns = images.columns
        let total = imageCount * height * width

        // One sequential pass writing every output value exactly once: the 245 MB result for 60k images is
        // bound by memory traffic, so filling with the pad value first and overwriting would cost a second pass.
        let pixels = [Float](unsafeUninitializedCapacity: total) { output, initializedCount in
            images.pixels.withUnsafeBufferPointer { source in
                table.withUnsafeBufferPointer { lookup in
                    var next = output.baseAddress!
                    var sourceRow = source.baseAddress!
                    for _ in 0..<imageCount {
                        next.initialize(repeating: padValue, count: pad * width)  // top padding rows
                        next += pad * width
                        for _ in 0..<sourceRows {
                            next.initialize(repeating: padValue, count: pad)
                            next += pad
                            for column in 0..<sourceColumns {
                                next[column] = lookup[Int(sourceRow[column])]
                            }
                            next += sourceColumns
                            sourceRow += sourceColumns
                            next.initialize(repeating: padValue, count: pad)
                            next += pad
                        }
                        next.initialize(repeating: padValue, count: pad * width)  // bottom padding rows
                        next += pad * width
                    }
                    precondition(next == output.baseAddress! + total)
                }
            }
            initializedCount = total
        }
        return (height, width, pixels)
    }
}
