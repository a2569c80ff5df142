import Foundation

/// The images of an array dataset, in one of the two layouts the readers accept.
public enum ArrayImages: Sendable {
    /// Raw 8-bit pixels, N×H×W×C interleaved (C = 1 for an N×H×W array).
    case bytes(count: Int, height: Int, width: Int, channels: Int, samples: [UInt8])
    /// Already preprocessed float32, N×C×H×W.
    case floats(count: Int, channels: Int, height: Int, width: Int, values: [Float])

    public var count: Int {
        switch self {
        case let .bytes(count, _, _, _, _), let .floats(count, _, _, _, _):
            return count
        }
    }
}

/// Images with their class labels, when the file has any.
public struct ArrayDataset: Sendable {
    public let images: ArrayImages
    /// One class index (≥ 0) per image, or nil for an unlabeled set (a bare `.npy`, or an `.npz` without `labels`).
    public let labels: [Int]?

    public init(images: ArrayImages, labels: [Int]?) {
        self.images = images
        self.labels = labels
    }
}

/// Reads image-classification datasets saved with NumPy:
///
/// - `.npz` (`np.savez` or `np.savez_compressed`) with an array `images` and optionally `labels`; other
///   arrays in the archive are ignored.
/// - `.npy` (`np.save`) holding only images: an unlabeled set, enough for calibration.
///
/// `images` is uint8 N×H×W or N×H×W×C (C = 1, 3, 4: raw pixels, preprocessed later like decoded image files)
/// or float32 N×C×H×W (already preprocessed, used as is). `labels` is 1-D, one integer ≥ 0 per image.
///
/// The format is decided by the file's first bytes, not its name, so a mislabelled file gets a message about
/// what it actually contains. Errors inside an `.npz` name the entry and give byte offsets within the entry's
/// uncompressed data, which is where the .npy format is defined.
public enum ArrayDatasetReader {
    public static func read(_ url: URL) throws -> ArrayDataset {
        let path = url.path
        let bytes = try FileContents.rawBytes(url)

        if ZipArchive.looksLikeZip(bytes) {
            return try readArchive(ZipArchive(bytes: bytes, path: path))
        }
        if bytes.starts(with: NPYArray.magic) {
            let images = try readImages(NPYData(parsing: bytes[...], path: path))
            return ArrayDataset(images: images, labels: nil)
        }
        throw DatasetError.malformedFile(path: path, byteOffset: 0, problem: notNumPyProblem(bytes))
    }

    private static func readArchive(_ archive: ZipArchive) throws -> ArrayDataset {
        // np.load finds `name` as entry `name.npy` or, from other writers, plain `name`; so do we. Like np.load,
        // a repeated name means the last one (zip readers index the central directory in order).
        func entry(_ name: String) -> ZipArchive.Entry? {
            archive.entries.last { $0.name == name + ".npy" } ?? archive.entries.last { $0.name == name }
        }
        func array(_ entry: ZipArchive.Entry) throws -> NPYData {
            let location = "\(archive.path) (entry \(entry.name))"
            let contents = try archive.contents(of: entry)
            guard contents.starts(with: NPYArray.magic) else {
                throw DatasetError.malformedFile(path: location, byteOffset: 0,
                                                 problem: "expected a .npy array (magic \\x93NUMPY), "
                                                     + "found bytes \(hexDump(Array(contents.prefix(8))))")
            }
            return try NPYData(parsing: contents, path: location)
        }

        guard let imagesEntry = entry("images") else {
            let found = archive.entries.isEmpty
                ? "the archive is empty"
                : "found entries: " + archive.entries.map(\.name).joined(separator: ", ")
            throw DatasetError.badImageSet(
                path: archive.path,
                problem: "expected an array named 'images' (entry images.npy) and optionally 'labels'; \(found). "
                    + "Save with np.savez(path, images=x, labels=y) (keyword arguments name the arrays; "
                    + "positional ones become arr_0, arr_1, ...)")
        }
        let images = try readImages(try array(imagesEntry))
        guard let labelsEntry = entry("labels") else {
            return ArrayDataset(images: images, labels: nil)
        }
        let labelsData = try array(labelsEntry)
        let labels = try readLabels(labelsData)
        guard labels.count == images.count else {
            throw DatasetError.badImageSet(
                path: archive.path,
                problem: "labels has \(labels.count) values but images has \(images.count) images: expected "
                    + "exactly one label per image (labels count ≠ images count)")
        }
        return ArrayDataset(images: images, labels: labels)
    }

    // MARK: - images and labels from parsed arrays

    static let acceptedImageDtypes = "'|u1' (uint8 raw pixels, N×H×W or N×H×W×C) or '<f4' (float32, "
        + "already preprocessed, N×C×H×W)"
    static let acceptedLabelDtypes = "|u1 |i1 <i2 <u2 <i4 <u4 <i8 <u8"

    private static func readImages(_ array: NPYData) throws -> ArrayImages {
        let shape = array.shape
        let shapeText = pythonTuple(shape)
        let isBytes = array.dtype.kind == "u" && array.dtype.size == 1
        let isFloats = array.dtype.kind == "f" && array.dtype.size == 4 && array.dtype.order == "<"
        guard isBytes || isFloats else {
            var problem = "unsupported images dtype '\(array.descr)'\(array.dtype.readableName): expected "
                + acceptedImageDtypes
            switch array.dtype.kind {
            case "f":
                problem += "; convert with images.astype(np.float32)"
            case "i", "u":
                problem += "; if these are 0–255 pixel values convert with images.astype(np.uint8), if they are "
                    + "preprocessed values use images.astype(np.float32) in N×C×H×W"
            default:
                break
            }
            throw array.error(at: array.headerStart, problem)
        }
        try array.rejectFortranOrder()
        guard shape.allSatisfy({ $0 > 0 }) else {
            throw array.error(at: array.headerStart, "images has shape \(shapeText): expected at least one "
                + "image and no zero-sized dimension")
        }

        if isBytes {
            let (height, width, channels): (Int, Int, Int)
            switch shape.count {
            case 3:
                (height, width, channels) = (shape[1], shape[2], 1)
            case 4:
                guard [1, 3, 4].contains(shape[3]) else {
                    let hint = [1, 3, 4].contains(shape[1])
                        ? "; this looks channels-first (N×C×H×W): save np.transpose(images, (0, 2, 3, 1)) instead"
                        : ""
                    throw array.error(at: array.headerStart, "uint8 images of shape \(shapeText) have "
                        + "\(shape[3]) channels in the last axis: expected N×H×W×C with C = 1, 3 or 4 "
                        + "(gray, RGB, RGBA)" + hint)
                }
                (height, width, channels) = (shape[1], shape[2], shape[3])
            default:
                throw array.error(at: array.headerStart, "uint8 images of shape \(shapeText) have rank "
                    + "\(shape.count): expected rank 3 (N×H×W, gray) or 4 (N×H×W×C)")
            }
            let data = try array.elementBytes()
            return .bytes(count: shape[0], height: height, width: width, channels: channels, samples: Array(data))
        }

        guard shape.count == 4 else {
            let hint = shape.count == 3 ? "; for one channel save images[:, None] (N×1×H×W)" : ""
            throw array.error(at: array.headerStart, "float32 images of shape \(shapeText) have rank "
                + "\(shape.count): expected rank 4 (N×C×H×W, already preprocessed)" + hint)
        }
        let data = try array.elementBytes()
        let count = data.count / 4
        let values = [Float](unsafeUninitializedCapacity: count) { output, initialized in
            data.withUnsafeBytes { raw in
                if 1.littleEndian == 1 {
                    // The file's byte order is the host's: one copy. (A loop per value is also correct, but takes
                    // seconds for a CIFAR-sized array in the debug builds the tests use.)
                    UnsafeMutableRawBufferPointer(output).copyMemory(from: raw)
                } else {
                    for index in 0..<count {
                        let bits = raw.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)
                        output[index] = Float(bitPattern: UInt32(littleEndian: bits))
                    }
                }
            }
            initialized = count
        }
        return .floats(count: shape[0], channels: shape[1], height: shape[2], width: shape[3], values: values)
    }

    private static func readLabels(_ array: NPYData) throws -> [Int] {
        let dtype = array.dtype
        // One-byte types have no byte order ('|'); wider ones must be little-endian ('<'), as numpy writes them.
        let isInteger = (dtype.kind == "i" || dtype.kind == "u") && [1, 2, 4, 8].contains(dtype.size)
            && (dtype.size == 1 || dtype.order == "<")
        guard isInteger else {
            throw array.error(at: array.headerStart, "unsupported labels dtype '\(array.descr)'"
                + "\(dtype.readableName): expected an integer dtype, one of \(acceptedLabelDtypes); "
                + "convert with labels.astype(np.int64)")
        }
        guard array.shape.count == 1 else {
            let hint = array.shape.count == 2 && array.shape[1] == 1 ? "; save labels.reshape(-1)" : ""
            throw array.error(at: array.headerStart, "labels has shape \(pythonTuple(array.shape)): expected "
                + "a 1-D array with one class index per image" + hint)
        }
        let data = try array.elementBytes()
        let count = array.shape[0]
        var labels = [Int]()
        labels.reserveCapacity(count)
        try data.withUnsafeBytes { raw in
            for index in 0..<count {
                let offset = index * dtype.size
                let value: Int?  // nil: a uint64 beyond Int.max
                switch (dtype.kind, dtype.size) {
                case ("u", 1): value = Int(raw[offset])
                case ("i", 1): value = Int(Int8(bitPattern: raw[offset]))
                case ("u", 2): value = Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
                case ("i", 2): value = Int(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int16.self)))
                case ("u", 4): value = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
                case ("i", 4): value = Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int32.self)))
                case ("u", 8): value = Int(exactly: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))
                default: value = Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Int64.self)))
                }
                guard let label = value, label >= 0 else {
                    let shown = value.map(String.init) ?? "\(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)))"
                    throw array.error(at: array.dataStart + offset, "label \(shown) at index \(index) is "
                        + (value == nil ? "too large" : "negative") + ": expected class indices ≥ 0")
                }
                labels.append(label)
            }
        }
        return labels
    }

    // MARK: - messages

    private static func notNumPyProblem(_ bytes: [UInt8]) -> String {
        guard !bytes.isEmpty else { return "the file is empty: expected a .npz or .npy file" }
        var problem = "not a NumPy file: expected a .npz archive (a zip file, starting with PK\\3\\4) or a .npy "
            + "array (starting with \\x93NUMPY), found bytes \(hexDump(Array(bytes.prefix(8))))"
        if bytes.starts(with: [0x1f, 0x8b]) {
            problem += " (a gzip file: decompress it first; np.savez_compressed writes a zip, not gzip)"
        }
        return problem
    }

    /// `50 4b 03 04 ("PK..")`: hex plus printable ASCII, so both binary and text files are recognisable.
    static func hexDump(_ bytes: [UInt8]) -> String {
        let hex = bytes.map { String(format: "%02x", $0) }.joined(separator: " ")
        let text = String(bytes.map { (0x20..<0x7f).contains($0) ? Character(UnicodeScalar($0)) : "." })
        return "\(hex) (\"\(text)\")"
    }

    /// `(5, 32, 32)` and `(5,)`, as Python prints the shape the user saved.
    static func pythonTuple(_ shape: [Int]) -> String {
        shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
    }
}

/// An NPY array's header and its still-uninterpreted data bytes, from a file or a zip entry.
struct NPYData {
    /// The file, or "archive.npz (entry images.npy)".
    let path: String
    let descr: String
    let dtype: DType
    let fortranOrder: Bool
    let shape: [Int]
    /// Offsets within `bytes` (relative to its start), for error messages.
    let headerStart: Int
    let dataStart: Int
    let bytes: ArraySlice<UInt8>

    /// A simple dtype string: byte order ('<', '>', '|', '='), kind ('u', 'i', 'f', 'b', ...) and item size.
    struct DType {
        let order: Character
        let kind: Character
        let size: Int

        /// " (float64)" and the like; empty for kinds without a simple name.
        var readableName: String {
            switch kind {
            case "f": return " (float\(size * 8))"
            case "i": return " (int\(size * 8))"
            case "u": return " (uint\(size * 8))"
            case "b": return " (bool)"
            default: return ""
            }
        }
    }

    /// Parses magic, version, header length and the header dictionary (versions 1.0, 2.0 and 3.0).
    init(parsing bytes: ArraySlice<UInt8>, path: String) throws {
        self.path = path
        self.bytes = bytes
        func fail(_ offset: Int, _ problem: String) -> DatasetError {
            .malformedFile(path: path, byteOffset: offset, problem: problem)
        }
        func byte(_ offset: Int) -> Int { Int(bytes[bytes.startIndex + offset]) }

        guard bytes.count >= 10 else {
            throw fail(bytes.count, "expected at least 10 bytes (NPY magic, version, header length), found "
                + "\(bytes.count) (truncated?)")
        }
        let major = byte(6)
        let headerLength: Int
        switch major {
        case 1:
            headerLength = byte(8) | byte(9) << 8
            headerStart = 10
        case 2, 3:
            guard bytes.count >= 12 else {
                throw fail(bytes.count, "expected a 4-byte header length at byte 8, data ends at byte \(bytes.count) (truncated?)")
            }
            headerLength = byte(8) | byte(9) << 8 | byte(10) << 16 | byte(11) << 24
            headerStart = 12
        default:
            throw fail(6, "expected NPY format version 1.x, 2.x or 3.x, found \(major).\(byte(7))")
        }
        dataStart = headerStart + headerLength
        guard dataStart <= bytes.count else {
            throw fail(bytes.count, "expected a \(headerLength)-byte header from byte \(headerStart) to "
                + "\(dataStart), data ends at byte \(bytes.count) (truncated?)")
        }
        let headerBytes = bytes[(bytes.startIndex + headerStart)..<(bytes.startIndex + dataStart)]
        guard let text = String(bytes: headerBytes, encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw fail(headerStart, "expected a text header dictionary, found undecodable bytes")
        }
        let header = try NPYHeader(parsing: text, path: path, offset: headerStart)
        descr = header.descr
        fortranOrder = header.fortranOrder
        shape = header.shape

        let characters = Array(descr)
        guard characters.count >= 3, "<>|=".contains(characters[0]), let size = Int(String(characters[2...])),
              size > 0 else {
            throw fail(headerStart, "unsupported dtype '\(descr)': expected a simple type string such as "
                + "'|u1' or '<f4'")
        }
        dtype = DType(order: characters[0], kind: characters[1], size: size)
    }

    func error(at offset: Int, _ problem: String) -> DatasetError {
        .malformedFile(path: path, byteOffset: offset, problem: problem)
    }

    /// Multi-dimensional Fortran-order data would be read transposed; for one dimension both orders agree.
    func rejectFortranOrder() throws {
        guard fortranOrder && shape.count > 1 else { return }
        throw error(at: headerStart, "unsupported fortran_order True: expected a C-order array "
            + "(save np.ascontiguousarray(a) instead)")
    }

    /// The data bytes, checked to be exactly shape × item size.
    func elementBytes() throws -> ArraySlice<UInt8> {
        var count = 1
        for dimension in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            guard !overflow else { throw error(at: headerStart, "shape \(shape) is too large to be real") }
            count = product
        }
        let (size, overflow) = count.multipliedReportingOverflow(by: dtype.size)
        guard !overflow else { throw error(at: headerStart, "shape \(shape) is too large to be real") }
        let available = bytes.count - dataStart
        guard available >= size else {
            throw error(at: bytes.count, "expected \(size) bytes of '\(descr)' data (shape "
                + "\(ArrayDatasetReader.pythonTuple(shape))) from byte \(dataStart) to \(dataStart + size), but the "
                + "data ends at byte \(bytes.count) (truncated?)")
        }
        guard available == size else {
            throw error(at: dataStart + size, "expected the end of the array after \(count) '\(descr)' values, "
                + "found \(available - size) extra bytes")
        }
        let start = bytes.startIndex + dataStart
        return bytes[start..<start + size]
    }
}
