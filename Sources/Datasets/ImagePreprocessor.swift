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

        let pixels = [Float](unsafeUninitializedCapacity: total) { output, initializedCount in
            // Every value is the pad value unless it lies inside the image; fill first, then overwrite the inside.
            output.initialize(repeating: padValue)
            images.pixels.withUnsafeBufferPointer { source in
                table.withUnsafeBufferPointer { lookup in
                    for image in 0..<imageCount {
                        let sourceImage = source.baseAddress! + image * sourceRows * sourceColumns
                        let outputImage = output.baseAddress! + image * height * width
                        for row in 0..<sourceRows {
                            let sourceRow = sourceImage + row * sourceColumns
                            let outputRow = outputImage + (row + pad) * width + pad
                            for column in 0..<sourceColumns {
                                outputRow[column] = lookup[Int(sourceRow[column])]
                            }
                        }
                    }
                }
            }
            initializedCount = total
        }
        return (height, width, pixels)
    }
}
