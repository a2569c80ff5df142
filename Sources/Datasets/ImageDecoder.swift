import CPNG
import CTurboJPEG
import Foundation

/// One decoded image: 8-bit samples, interleaved (HWC), 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA) channels.
public struct DecodedImage: Sendable, Equatable {
    public let width: Int
    public let height: Int
    public let channels: Int
    public let samples: [UInt8]
}

/// Decodes PNG (libpng's simplified API) and JPEG (libjpeg-turbo's TurboJPEG API) files. Both APIs report errors
/// through return values, so no setjmp/longjmp crosses Swift frames. Every error names the file and the problem.
public enum ImageDecoder {
    public static let fileExtensions: Set<String> = ["png", "jpg", "jpeg"]

    public static func decode(_ data: Data, path: String) throws -> DecodedImage {
        if data.starts(with: [0x89, 0x50, 0x4E, 0x47]) { return try decodePNG(data, path: path) }
        if data.starts(with: [0xFF, 0xD8]) { return try decodeJPEG(data, path: path) }
        guard !data.isEmpty else { throw DatasetError.badImage(path: path, problem: "the file is empty; expected a PNG or JPEG image") }
        let head = data.prefix(4).map { String(format: "%02x", $0) }.joined(separator: " ")
        throw DatasetError.badImage(path: path, problem: "not a PNG or JPEG file (it starts with bytes \(head))")
    }

    /// Gray, gray + alpha, RGB or RGBA at 8 bits per sample, whatever the file stores: palettes are expanded and
    /// 16-bit samples keep their high byte (as Pillow does for 16-bit RGB).
    static func decodePNG(_ data: Data, path: String) throws -> DecodedImage {
        // libpng reads from the memory it was given until png_image_finish_read: both calls run inside one
        // withUnsafeBytes, so the pointer never outlives the closure that vouches for it.
        try data.withUnsafeBytes { bytes in
            var image = png_image()
            image.version = png_uint_32(PNG_IMAGE_VERSION)
            guard png_image_begin_read_from_memory(&image, bytes.baseAddress, bytes.count) != 0 else { throw pngError(&image, path: path) }
            defer { png_image_free(&image) }
            let hasColor = image.format & PNG_FORMAT_FLAG_COLOR != 0
            let hasAlpha = image.format & PNG_FORMAT_FLAG_ALPHA != 0
            let channels = (hasColor ? 3 : 1) + (hasAlpha ? 1 : 0)
            let is16Bit = image.format & PNG_FORMAT_FLAG_LINEAR != 0
            // 16-bit files are read as they are stored (the LINEAR formats do no gamma conversion for a 16-bit
            // file) and reduced to their high byte here; 8-bit files are read as 8-bit.
            image.format = png_uint_32((hasColor ? PNG_FORMAT_FLAG_COLOR : 0) | (hasAlpha ? PNG_FORMAT_FLAG_ALPHA : 0) | (is16Bit ? PNG_FORMAT_FLAG_LINEAR : 0))
            let width = Int(image.width), height = Int(image.height)
            let count = width * height * channels
            var samples = [UInt8](repeating: 0, count: count)
            if is16Bit {
                var wide = [UInt16](repeating: 0, count: count)
                let finished = wide.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
                guard finished != 0 else { throw pngError(&image, path: path) }
                for index in 0..<count { samples[index] = UInt8(wide[index] >> 8) }
            } else {
                let finished = samples.withUnsafeMutableBytes { png_image_finish_read(&image, nil, $0.baseAddress, 0, nil) }
                guard finished != 0 else { throw pngError(&image, path: path) }
            }
            return DecodedImage(width: width, height: height, channels: channels, samples: samples)
        }
    }

    private static func pngError(_ image: inout png_image, path: String) -> DatasetError {
        let message = withUnsafeBytes(of: &image.message) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return .badImage(path: path, problem: "PNG: \(message.isEmpty ? "unreadable" : message)")
    }

    /// Gray JPEGs as 1 channel, YCbCr/RGB ones as RGB; CMYK and YCCK are refused. A warning (e.g. a truncated
    /// file, which libjpeg would pad with gray) is an error, as in Pillow.
    static func decodeJPEG(_ data: Data, path: String) throws -> DecodedImage {
        guard let handle = tjInitDecompress() else { throw DatasetError.badImage(path: path, problem: "JPEG: cannot start libjpeg-turbo") }
        defer { tjDestroy(handle) }
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        let header = data.withUnsafeBytes { bytes in
            tjDecompressHeader3(handle, bytes.bindMemory(to: UInt8.self).baseAddress, UInt(bytes.count), &width, &height, &subsampling, &colorspace)
        }
        guard header == 0 else { throw jpegError(handle, path: path) }
        if colorspace == Int32(TJCS_CMYK.rawValue) || colorspace == Int32(TJCS_YCCK.rawValue) {
            throw DatasetError.badImage(path: path, problem: "JPEG in CMYK colour is not supported; convert it to RGB (e.g. `convert in.jpg -colorspace sRGB out.jpg`)")
        }
        let gray = colorspace == Int32(TJCS_GRAY.rawValue)
        let channels = gray ? 1 : 3
        var samples = [UInt8](repeating: 0, count: Int(width) * Int(height) * channels)
        let result = samples.withUnsafeMutableBufferPointer { output in
            data.withUnsafeBytes { bytes in
                tjDecompress2(handle, bytes.bindMemory(to: UInt8.self).baseAddress, UInt(bytes.count), output.baseAddress,
                              width, 0, height, gray ? Int32(TJPF_GRAY.rawValue) : Int32(TJPF_RGB.rawValue), Int32(TJFLAG_STOPONWARNING))
            }
        }
        guard result == 0 else { throw jpegError(handle, path: path) }
        return DecodedImage(width: Int(width), height: Int(height), channels: channels, samples: samples)
    }

    private static func jpegError(_ handle: tjhandle, path: String) -> DatasetError {
        let message = tjGetErrorStr2(handle).map { String(cString: $0) } ?? "unreadable"
        return .badImage(path: path, problem: "JPEG: \(message)")
    }
}
