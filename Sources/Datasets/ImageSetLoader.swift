import Foundation

/// Loads `image-folder` and `image-list` datasets: finds the files and labels, decodes and preprocesses every image
/// on all cores (`DatasetSpec`'s order: channels → resize → crop → pad → normalise), and returns them in memory.
enum ImageSetLoader {
    struct Entry {
        let url: URL
        let label: Int
    }

    struct Listing {
        let entries: [Entry]
        let classNames: [String]
        let isLabeled: Bool
    }

    static func load(_ spec: DatasetSpec, projectDirectory: URL) throws -> LabeledImages {
        let listing = try list(spec, projectDirectory: projectDirectory)
        let entries = Array(listing.entries.prefix(spec.limit ?? listing.entries.count))
        let channels = spec.effectiveChannels
        let tables = (0..<channels.count).map { c in
            (0...255).map { Float((Double($0) / 255 - spec.mean(ofChannel: c)) / spec.std(ofChannel: c)) }
        }
        var results = [Result<Preprocessed, Error>?](repeating: nil, count: entries.count)
        let workers = max(1, min(ProcessInfo.processInfo.activeProcessorCount, entries.count))
        results.withUnsafeMutableBufferPointer { slots in
            let output = UncheckedSendable(slots)
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                var index = worker
                while index < entries.count {
                    output.value[index] = Result {
                        let url = entries[index].url
                        let data: Data
                        do { data = try Data(contentsOf: url) } catch {
                            throw DatasetError.unreadableFile(path: url.path, reason: error.localizedDescription)
                        }
                        return try preprocess(try ImageDecoder.decode(data, path: url.path), path: url.path, spec: spec, tables: tables)
                    }
                    index += workers
                }
            }
        }

        var pixels: [Float] = [], labels: [Int] = [], skipped: [String] = []
        var shape: (height: Int, width: Int, first: String)?
        for (entry, result) in zip(entries, results) {
            do {
                let image = try result!.get()
                if let shape, shape.height != image.height || shape.width != image.width {
                    throw DatasetError.badImage(path: entry.url.path, problem: "is \(image.width)×\(image.height) after preprocessing, but \(shape.first) is \(shape.width)×\(shape.height); set resize (and crop) so that every image has one size")
                }
                if shape == nil { shape = (image.height, image.width, entry.url.path) }
                pixels += image.values
                labels.append(entry.label)
            } catch {
                guard spec.onError == .skip else { throw error }
                skipped.append("\(error)")
            }
        }
        guard let shape else {
            throw DatasetError.badImageSet(path: spec.path ?? "", problem: "every one of the \(entries.count) images was skipped; the first: \(skipped.first ?? "")")
        }
        var images = try LabeledImages(count: labels.count, channels: channels.count, height: shape.height, width: shape.width,
                                       pixels: pixels, labels: labels, classNames: listing.classNames)
        images.isLabeled = listing.isLabeled
        images.skippedImages = skipped
        return images
    }

    // MARK: - Files and labels

    static func resolve(_ path: String, against directory: URL) -> URL {
        let expanded = NSString(string: path).expandingTildeInPath
        return (expanded.hasPrefix("/") ? URL(fileURLWithPath: expanded) : directory.appendingPathComponent(expanded)).standardizedFileURL
    }

    static func list(_ spec: DatasetSpec, projectDirectory: URL) throws -> Listing {
        let url = resolve(spec.path ?? "", against: projectDirectory)
        let classNames = try spec.classes.map { try readClassNames(resolve($0, against: projectDirectory)) }
        return spec.name == "image-folder" ? try listFolder(url, classNames: classNames) : try listFile(url, spec: spec, classNames: classNames, projectDirectory: projectDirectory)
    }

    private static func isDirectory(_ url: URL) -> Bool? {
        var directory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &directory) else { return nil }
        return directory.boolValue
    }

    private static func isImage(_ url: URL) -> Bool { ImageDecoder.fileExtensions.contains(url.pathExtension.lowercased()) }

    /// Class subfolders (sorted by name unless `classNames` gives the order), each searched recursively; without
    /// subfolders, the folder's own images form an unlabeled set.
    static func listFolder(_ folder: URL, classNames given: [String]?) throws -> Listing {
        guard let directory = isDirectory(folder) else { throw DatasetError.badImageSet(path: folder.path, problem: "no such folder") }
        guard directory else { throw DatasetError.badImageSet(path: folder.path, problem: "is a file; an image-folder dataset takes a folder (an image-list takes a .txt file)") }
        let children = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil, options: [.skipsHiddenFiles])
        let subfolders = children.filter { isDirectory($0) == true }.map(\.lastPathComponent).sorted()
        if subfolders.isEmpty {
            let files = children.filter(isImage).sorted { $0.lastPathComponent < $1.lastPathComponent }
            guard !files.isEmpty else { throw DatasetError.badImageSet(path: folder.path, problem: "has no class subfolders and no images (.png, .jpg, .jpeg)") }
            return Listing(entries: files.map { Entry(url: $0, label: 0) }, classNames: ["(unlabeled)"], isLabeled: false)
        }
        let names = given ?? subfolders
        if let given {
            if let missing = subfolders.first(where: { !given.contains($0) }) {
                throw DatasetError.badImageSet(path: folder.appendingPathComponent(missing).path, problem: "is a class folder missing from the classes file (\(given.count) classes)")
            }
        }
        var entries: [Entry] = []
        for (label, name) in names.enumerated() {
            let classFolder = folder.appendingPathComponent(name)
            guard isDirectory(classFolder) == true else { continue }
            let files = (FileManager.default.enumerator(at: classFolder, includingPropertiesForKeys: nil, options: [.skipsHiddenFiles])?
                .compactMap { $0 as? URL } ?? []).filter(isImage)
                .sorted { $0.path < $1.path }
            entries += files.map { Entry(url: $0, label: label) }
        }
        guard !entries.isEmpty else { throw DatasetError.badImageSet(path: folder.path, problem: "its class folders (\(subfolders.prefix(3).joined(separator: ", "))…) hold no images (.png, .jpg, .jpeg)") }
        return Listing(entries: entries, classNames: names, isLabeled: true)
    }

    /// Lines `relative/path.jpg LABEL` (MNN's and Caffe's format); paths relative to `root`, else the list's folder.
    static func listFile(_ file: URL, spec: DatasetSpec, classNames given: [String]?, projectDirectory: URL) throws -> Listing {
        guard let directory = isDirectory(file) else { throw DatasetError.badImageSet(path: file.path, problem: "no such file") }
        guard !directory else { throw DatasetError.badImageSet(path: file.path, problem: "is a folder; an image-list dataset takes a text file of 'path LABEL' lines (an image-folder takes a folder)") }
        let text: String
        do { text = try String(contentsOf: file, encoding: .utf8) } catch {
            throw DatasetError.unreadableFile(path: file.path, reason: error.localizedDescription)
        }
        let base = spec.root.map { resolve($0, against: projectDirectory) } ?? file.deletingLastPathComponent()
        var entries: [Entry] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard fields.count >= 2, let label = Int(fields.last!) else {
                throw DatasetError.badImageSet(path: "\(file.path):\(number + 1)", problem: "expected 'relative/path.jpg LABEL' (LABEL a class number), found '\(line)'")
            }
            guard label >= 0, given.map({ label < $0.count }) ?? true else {
                throw DatasetError.badImageSet(path: "\(file.path):\(number + 1)", problem: "label \(label) is outside 0..<\(given?.count ?? 0) (the classes file's \(given?.count ?? 0) classes)")
            }
            let path = line.dropLast(fields.last!.count).trimmingCharacters(in: .whitespaces)
            entries.append(Entry(url: resolve(path, against: base), label: label))
        }
        guard !entries.isEmpty else { throw DatasetError.badImageSet(path: file.path, problem: "lists no images") }
        let names = given ?? (0...(entries.map(\.label).max() ?? 0)).map(String.init)
        return Listing(entries: entries, classNames: names, isLabeled: true)
    }

    static func readClassNames(_ file: URL) throws -> [String] {
        let text: String
        do { text = try String(contentsOf: file, encoding: .utf8) } catch {
            throw DatasetError.unreadableFile(path: file.path, reason: error.localizedDescription)
        }
        let names = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !names.isEmpty else { throw DatasetError.badImageSet(path: file.path, problem: "names no classes (one class name per line)") }
        return names
    }

    // MARK: - Pixels

    struct Preprocessed {
        let height: Int
        let width: Int
        let values: [Float]
    }

    static func preprocess(_ decoded: DecodedImage, path: String, spec: DatasetSpec, tables: [[Float]]) throws -> Preprocessed {
        var image = decoded
        let channels = spec.effectiveChannels
        if image.channels == 2 || image.channels == 4 {
            guard spec.alpha == .drop else {
                throw DatasetError.badImage(path: path, problem: "has an alpha channel (\(image.channels == 4 ? "RGBA, 4 channels" : "gray + alpha, 2 channels")); the model takes \(channels.count) (\(channels.rawValue)): set alpha: drop to ignore it")
            }
            image = ImageResampling.droppingAlpha(image)
        }
        image = ImageResampling.convert(image, toChannels: channels.count)
        switch spec.resize {
        case .shorterSide(let side)?:
            let size = ImageResampling.shorterSideSize(width: image.width, height: image.height, shorter: side)
            image = ImageResampling.resize(image, width: size.width, height: size.height)
        case .exact(let height, let width)?:
            image = ImageResampling.resize(image, width: width, height: height)
        case nil: break
        }
        if let crop = spec.crop {
            guard crop <= image.width, crop <= image.height else {
                throw DatasetError.badImage(path: path, problem: "is \(image.width)×\(image.height)\(spec.resize == nil ? "" : " after resizing"), smaller than crop \(crop); resize it first (resize: \(crop) or more)")
            }
            image = ImageResampling.centerCrop(image, width: crop, height: crop)
        }
        let pad = spec.pad
        let height = image.height + 2 * pad, width = image.width + 2 * pad
        var values = [Float](repeating: 0, count: channels.count * height * width)
        for c in 0..<channels.count {
            // BGR models read the decoded RGB channels in reverse order.
            let source = channels == .bgr ? 2 - c : c
            let table = tables[c]
            let plane = c * height * width
            for index in plane..<(plane + height * width) { values[index] = table[0] }
            for y in 0..<image.height {
                for x in 0..<image.width {
                    values[plane + (y + pad) * width + x + pad] = table[Int(image.samples[(y * image.width + x) * image.channels + source])]
                }
            }
        }
        return Preprocessed(height: height, width: width, values: values)
    }
}

/// Hands a buffer to `concurrentPerform`'s workers, each of which writes only its own indices.
private struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
