import Foundation

/// The geometric and colour steps of preprocessing on decoded 8-bit images, computed as Pillow computes them, so a
/// model trained with torchvision's `Resize`/`CenterCrop` on PIL images sees the same pixels here.
enum ImageResampling {
    /// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS` in Resample.c).
    private static let precisionBits = 32 - 8 - 2

    /// Gray ↔ RGB as Pillow's `convert("L")` / `convert("RGB")` do (ITU-R 601-2 luma with Pillow's integer
    /// weights). Alpha must have been dealt with before.
    static func convert(_ image: DecodedImage, toChannels channels: Int) -> DecodedImage {
        precondition(image.channels == 1 || image.channels == 3)
        guard image.channels != channels else { return image }
        let pixels = image.width * image.height
        var samples = [UInt8](repeating: 0, count: pixels * channels)
        if channels == 3 {
            for index in 0..<pixels {
                let value = image.samples[index]
                samples[3 * index] = value; samples[3 * index + 1] = value; samples[3 * index + 2] = value
            }
        } else {
            for index in 0..<pixels {
                let r = UInt32(image.samples[3 * index]), g = UInt32(image.samples[3 * index + 1]), b = UInt32(image.samples[3 * index + 2])
                samples[index] = UInt8((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16)
            }
        }
        return DecodedImage(width: image.width, height: image.height, channels: channels, samples: samples)
    }

    /// Drops an alpha channel (gray + alpha → gray, RGBA → RGB), as Pillow's `convert` does.
    static func droppingAlpha(_ image: DecodedImage) -> DecodedImage {
        guard image.channels == 2 || image.channels == 4 else { return image }
        let kept = image.channels - 1, pixels = image.width * image.height
        var samples = [UInt8](repeating: 0, count: pixels * kept)
        for index in 0..<pixels {
            for channel in 0..<kept { samples[index * kept + channel] = image.samples[index * image.channels + channel] }
        }
        return DecodedImage(width: image.width, height: image.height, channels: kept, samples: samples)
    }

    /// torchvision's `Resize(size)` output size for an int: the shorter side becomes `size`, the longer one
    /// `int(size * long / short)`.
    static func shorterSideSize(width: Int, height: Int, shorter size: Int) -> (width: Int, height: Int) {
        if width <= height { return (size, Int(Double(size) * Double(height) / Double(width))) }
        return (Int(Double(size) * Double(width) / Double(height)), size)
    }

    /// Pillow's `Image.resize(size, BILINEAR)`: a triangle filter widened by the scale when shrinking
    /// (antialiasing), horizontal pass then vertical, each rounded to 8 bits in fixed point.
    static func resize(_ image: DecodedImage, width: Int, height: Int) -> DecodedImage {
        guard width != image.width || height != image.height else { return image }
        var current = image
        if width != image.width {
            let coefficients = Coefficients(inputSize: image.width, outputSize: width)
            current = pass(current, coefficients, horizontal: true)
        }
        if height != image.height {
            let coefficients = Coefficients(inputSize: image.height, outputSize: height)
            current = pass(current, coefficients, horizontal: false)
        }
        return current
    }

    /// torchvision's `CenterCrop`: offsets `round((size - crop) / 2)` with Python's round half to even. A crop
    /// larger than the image is refused by the caller.
    static func centerCrop(_ image: DecodedImage, width: Int, height: Int) -> DecodedImage {
        let top = Int((Double(image.height - height) / 2).rounded(.toNearestOrEven))
        let left = Int((Double(image.width - width) / 2).rounded(.toNearestOrEven))
        return crop(image, left: left, top: top, width: width, height: height)
    }

    /// The `width × height` window whose top-left pixel is (`left`, `top`); the caller keeps it inside the image.
    static func crop(_ image: DecodedImage, left: Int, top: Int, width: Int, height: Int) -> DecodedImage {
        guard width != image.width || height != image.height else { return image }
        precondition(left >= 0 && top >= 0 && left + width <= image.width && top + height <= image.height, "crop outside the image")
        var samples = [UInt8](repeating: 0, count: width * height * image.channels)
        let rowBytes = width * image.channels
        samples.withUnsafeMutableBufferPointer { output in
            image.samples.withUnsafeBufferPointer { input in
                for row in 0..<height {
                    let source = ((top + row) * image.width + left) * image.channels
                    (output.baseAddress! + row * rowBytes).update(from: input.baseAddress! + source, count: rowBytes)
                }
            }
        }
        return DecodedImage(width: width, height: height, channels: image.channels, samples: samples)
    }

    /// Pillow's `precompute_coeffs` for the bilinear filter (support 1) and `normalize_coeffs_8bpc`.
    private struct Coefficients {
        let bounds: [(first: Int, count: Int)]
        let weights: [Int32]
        let kernelSize: Int

        init(inputSize: Int, outputSize: Int) {
            let scale = Double(inputSize) / Double(outputSize)
            let filterScale = max(scale, 1)
            let support = 1.0 * filterScale
            kernelSize = Int(support.rounded(.up)) * 2 + 1
            var bounds: [(Int, Int)] = []
            var weights = [Int32](repeating: 0, count: outputSize * kernelSize)
            var raw = [Double](repeating: 0, count: kernelSize)
            let inverseScale = 1.0 / filterScale
            for output in 0..<outputSize {
                let center = (Double(output) + 0.5) * scale
                let first = max(Int(center - support + 0.5), 0)
                let count = min(Int(center + support + 0.5), inputSize) - first
                var total = 0.0
                for index in 0..<count {
                    let x = abs((Double(index + first) - center + 0.5) * inverseScale)
                    raw[index] = x < 1 ? 1 - x : 0
                    total += raw[index]
                }
                for index in 0..<count {
                    let weight = total != 0 ? raw[index] / total : raw[index]
                    let fixed = weight * Double(1 << ImageResampling.precisionBits)
                    weights[output * kernelSize + index] = Int32(weight < 0 ? (fixed - 0.5).rounded(.towardZero) : (fixed + 0.5).rounded(.towardZero))
                }
                bounds.append((first, count))
            }
            self.bounds = bounds
            self.weights = weights
        }
    }

    private static func pass(_ image: DecodedImage, _ coefficients: Coefficients, horizontal: Bool) -> DecodedImage {
        let channels = image.channels
        let outWidth = horizontal ? coefficients.bounds.count : image.width
        let outHeight = horizontal ? image.height : coefficients.bounds.count
        var samples = [UInt8](repeating: 0, count: outWidth * outHeight * channels)
        let half = Int64(1) << (precisionBits - 1)
        image.samples.withUnsafeBufferPointer { input in
            samples.withUnsafeMutableBufferPointer { output in
                coefficients.weights.withUnsafeBufferPointer { weights in
                    for y in 0..<outHeight {
                        for x in 0..<outWidth {
                            let (first, count) = coefficients.bounds[horizontal ? x : y]
                            let kernel = weights.baseAddress! + (horizontal ? x : y) * coefficients.kernelSize
                            for channel in 0..<channels {
                                var sum = half
                                for tap in 0..<count {
                                    let source = horizontal ? (y * image.width + first + tap) : ((first + tap) * image.width + x)
                                    sum += Int64(input[source * channels + channel]) * Int64(kernel[tap])
                                }
                                output[(y * outWidth + x) * channels + channel] = clip8(sum)
                            }
                        }
                    }
                }
            }
        }
        return DecodedImage(width: outWidth, height: outHeight, channels: channels, samples: samples)
    }

    private static func clip8(_ value: Int64) -> UInt8 {
        if value >= Int64(1) << (precisionBits + 8) { return 255 }
        if value <= 0 { return 0 }
        return UInt8(value >> precisionBits)
    }
}
