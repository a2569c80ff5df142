import Foundation

/// Reads the official CIFAR-10 binary version (`cifar-10-binary.tar.gz`, extracted to `cifar-10-batches-bin`).
///
/// Each file is a sequence of 3,073-byte records: one label byte (0–9), then the 32×32 image as three planes,
/// 1,024 red bytes, 1,024 green, 1,024 blue, each row-major. The reader returns interleaved HWC bytes, the layout
/// decoded image files have, so CIFAR-10 goes through the same preprocessing as any other image source.
public enum CIFAR10Reader {
    public static let trainFiles: [String] = (1...5).map { "data_batch_\($0).bin" }
    public static let testFile = "test_batch.bin"
    /// The folder the official archive extracts to.
    public static let folderName = "cifar-10-batches-bin"
    /// Optional, one class name per line; the archive ships it.
    public static let metaFile = "batches.meta.txt"
    public static let defaultClassNames = ["airplane", "automobile", "bird", "cat", "deer",
                                           "dog", "frog", "horse", "ship", "truck"]

    static let side = 32
    static let planeSize = side * side
    static let recordSize = 1 + 3 * planeSize

    /// Files of one split inside `directory` (which is either the cifar-10-batches-bin folder or a folder containing it).
    public static func files(split: DatasetSplit, in directory: URL) throws -> [URL] {
        try locate(split: split, in: directory).files
    }

    /// Images as interleaved HWC RGB bytes (N×32×32×3) and labels.
    public static func read(split: DatasetSplit, in directory: URL) throws
        -> (images: ArrayImages, labels: [Int], classNames: [String]) {
        let (folder, files) = try locate(split: split, in: directory)
        // Every file is checked before any pixel is converted, and the output is allocated once at its final
        // size: growing it per file costs a copy, and per-element appends are very slow in debug builds.
        var contents: [[UInt8]] = []
        var labels: [Int] = []
        for file in files {
            contents.append(try readRecords(of: file, labels: &labels))
        }
        let sampleCount = labels.count * 3 * planeSize
        let samples = [UInt8](unsafeUninitializedCapacity: sampleCount) { output, initialized in
            var firstImage = 0
            for bytes in contents {
                interleave(bytes, into: output, firstImage: firstImage)
                firstImage += bytes.count / recordSize
            }
            initialized = sampleCount
        }
        let images = ArrayImages.bytes(count: labels.count, height: side, width: side, channels: 3, samples: samples)
        return (images, labels, try classNames(in: folder))
    }

    private static func splitFiles(_ split: DatasetSplit) -> [String] {
        switch split {
        case .train: return trainFiles
        case .test: return [testFile]
        }
    }

    /// The folder holding the split's files: `directory` itself, else its `cifar-10-batches-bin` subfolder.
    private static func locate(split: DatasetSplit, in directory: URL) throws -> (folder: URL, files: [URL]) {
        let names = splitFiles(split)
        let candidates = [directory, directory.appendingPathComponent(folderName, isDirectory: true)]
        let fileManager = FileManager.default
        func missing(in folder: URL) -> [String] {
            names.filter { !fileManager.fileExists(atPath: folder.appendingPathComponent($0).path) }
        }
        for folder in candidates where missing(in: folder).isEmpty {
            return (folder, names.map { folder.appendingPathComponent($0) })
        }

        // Report against the folder holding the most CIFAR-10 files of either split (the real one, missing just
        // some), so the message says where the files were expected; on a tie, `directory` itself.
        func present(in folder: URL) -> Int {
            (trainFiles + [testFile, metaFile]).filter { fileManager.fileExists(atPath: folder.appendingPathComponent($0).path) }.count
        }
        let best = present(in: candidates[1]) > present(in: candidates[0]) ? candidates[1] : candidates[0]
        let searched = candidates.map(\.path).joined(separator: " and ")
        var problem = "CIFAR-10 \(split.rawValue) split: missing \(missing(in: best).joined(separator: ", ")) in "
            + "\(best.path) (searched \(searched)). Expected the binary version: download "
            + "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and extract it there"
        let pythonVersion = candidates.contains { folder in
            ["data_batch_1", "test_batch"].contains { fileManager.fileExists(atPath: folder.appendingPathComponent($0).path) }
        } || fileManager.fileExists(atPath: directory.appendingPathComponent("cifar-10-batches-py").path)
        if pythonVersion {
            problem += " (found files of the Python pickle version, which this reader does not read)"
        }
        throw DatasetError.badImageSet(path: directory.path, problem: problem)
    }

    /// Reads `file`, checks its size and every label byte, and appends its labels; returns the file's bytes.
    private static func readRecords(of file: URL, labels: inout [Int]) throws -> [UInt8] {
        let path = file.path
        let bytes = try FileContents.rawBytes(file)
        guard !bytes.isEmpty else {
            throw DatasetError.malformedFile(path: path, byteOffset: 0, problem: "the file is empty: expected "
                + "CIFAR-10 records of \(recordSize) bytes (1 label byte + 3,072 pixel bytes)")
        }
        let complete = bytes.count / recordSize
        guard bytes.count % recordSize == 0 else {
            throw DatasetError.malformedFile(
                path: path, byteOffset: complete * recordSize,
                problem: "file size \(bytes.count) is not a multiple of the \(recordSize)-byte CIFAR-10 record "
                    + "(1 label byte + 3,072 pixel bytes): the last complete record (\(complete)) ends at byte "
                    + "\(complete * recordSize), then \(bytes.count % recordSize) bytes remain (truncated?)")
        }

        labels.reserveCapacity(labels.count + complete)
        for record in 0..<complete {
            let label = Int(bytes[record * recordSize])
            guard label <= 9 else {
                throw DatasetError.malformedFile(
                    path: path, byteOffset: record * recordSize,
                    problem: "record \(record): label byte is \(label), expected 0–9 (a CIFAR-100 file? Its "
                        + "records have 2 label bytes and are 3,074 bytes long)")
            }
            labels.append(label)
        }
        return bytes
    }

    /// Writes the records of one file, planar RGB, as interleaved HWC images from image `firstImage` on:
    /// sample (y, x, c) comes from plane c at y·32 + x, one byte after the record's label.
    ///
    /// A `while` over raw pointers rather than `for in` over buffer subscripts: unoptimised (debug) builds, which
    /// the tests use, call a function per range step and per checked subscript; pointer arithmetic and integer
    /// compares are inlined even there.
    private static func interleave(_ bytes: [UInt8], into output: UnsafeMutableBufferPointer<UInt8>, firstImage: Int) {
        let records = bytes.count / recordSize
        precondition((firstImage + records) * 3 * planeSize <= output.count, "output sized from the same records")
        bytes.withUnsafeBufferPointer { input in
            var from = input.baseAddress!
            var to = output.baseAddress! + firstImage * 3 * planeSize
            var record = 0
            while record < records {
                from += 1  // the label byte
                var channel = 0
                while channel < 3 {
                    var pixel = 0
                    while pixel < planeSize {
                        (to + pixel * 3 + channel).pointee = (from + pixel).pointee
                        pixel += 1
                    }
                    from += planeSize
                    channel += 1
                }
                to += 3 * planeSize
                record += 1
            }
        }
    }

    /// Names from `batches.meta.txt` when present (blank lines ignored), else the standard ten.
    private static func classNames(in folder: URL) throws -> [String] {
        let url = folder.appendingPathComponent(metaFile)
        guard FileManager.default.fileExists(atPath: url.path) else { return defaultClassNames }
        let text: String
        do {
            text = try String(contentsOf: url, encoding: .utf8)
        } catch {
            throw DatasetError.unreadableFile(path: url.path, reason: error.localizedDescription)
        }
        let names = text.split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }
        // Labels go up to 9, so fewer than ten names would leave classes unnamed; more would invent classes.
        guard names.count == 10 else {
            throw DatasetError.badImageSet(path: url.path, problem: "expected 10 CIFAR-10 class names, one per "
                + "line, found \(names.count)")
        }
        return names
    }
}
