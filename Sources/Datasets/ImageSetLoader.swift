import Foundation

/// Finds the files and labels of `image-folder` and `image-list` datasets and preprocesses one decoded image
/// (`DatasetSpec`'s order: channels → resize → crop → pad → normalise); `StreamingImageSet` decodes them.
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

    /// The set at `spec`, decoded lazily batch by batch.
    static func open(_ spec: DatasetSpec, projectDirectory: URL) throws -> StreamingImageSet {
        let listing = try list(spec, projectDirectory: projectDirectory)
        let entries = Array(listing.entries.prefix(spec.limit ?? listing.entries.count))
        return try StreamingImageSet(spec: spec, raw: .files(entries.map(\.url)), labels: entries.map(\.label),
                                     classNames: listing.classNames, isLabeled: listing.isLabeled)
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

    /// What a training read draws per image: a random resized crop and a horizontal flip.
    struct AugmentationDraw {
        var random: SplitMix64
    }

    /// Preprocesses `decoded` into `destination` (`channels × height × width` floats, `height`/`width` including
    /// the padding). A random draw (training) replaces resize + crop with `random_resized_crop` and may flip.
    static func preprocess(_ decoded: DecodedImage, path: String, spec: DatasetSpec, tables: [[Float]],
                           height: Int, width: Int, into destination: UnsafeMutablePointer<Float>,
                           draw: inout AugmentationDraw?) throws {
        var image = decoded
        let channels = spec.effectiveChannels
        if image.channels == 2 || image.channels == 4 {
            guard spec.alpha == .drop else {
                throw DatasetError.badImage(path: path, problem: "has an alpha channel (\(image.channels == 4 ? "RGBA, 4 channels" : "gray + alpha, 2 channels")); the model takes \(channels.count) (\(channels.rawValue)): set alpha: drop to ignore it")
            }
            image = ImageResampling.droppingAlpha(image)
        }
        image = ImageResampling.convert(image, toChannels: channels.count)
        var flip = false
        if let size = spec.randomResizedCrop {
            if draw != nil {
                let window = randomResizedCropWindow(width: image.width, height: image.height, random: &draw!.random)
                image = ImageResampling.crop(image, left: window.left, top: window.top, width: window.width, height: window.height)
                image = ImageResampling.resize(image, width: size, height: size)
            } else {
                // Deterministic reads of a training set (calibration, evaluation) take the central square.
                let scaled = ImageResampling.shorterSideSize(width: image.width, height: image.height, shorter: size)
                image = ImageResampling.centerCrop(ImageResampling.resize(image, width: scaled.width, height: scaled.height), width: size, height: size)
            }
        } else {
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
        }
        if spec.flip == true, draw != nil { flip = draw!.random.next() & 1 == 1 }
        let pad = spec.pad
        guard image.height + 2 * pad == height, image.width + 2 * pad == width else {
            throw DatasetError.badImage(path: path, problem: "is \(image.width)×\(image.height) after preprocessing, but the dataset's images are \(width - 2 * pad)×\(height - 2 * pad) (its first image's size); set resize (and crop) so that every image has one size")
        }
        let plane = height * width
        image.samples.withUnsafeBufferPointer { samples in
            for c in 0..<channels.count {
                // BGR models read the decoded RGB channels in reverse order.
                let source = channels == .bgr ? 2 - c : c
                let table = tables[c]
                let output = destination + c * plane
                output.update(repeating: table[0], count: plane)
                for y in 0..<image.height {
                    let row = output + (y + pad) * width + pad
                    for x in 0..<image.width {
                        let sx = flip ? image.width - 1 - x : x
                        row[x] = table[Int(samples[(y * image.width + sx) * image.channels + source])]
                    }
                }
            }
        }
    }

    /// torchvision's `RandomResizedCrop.get_params` with its defaults (scale 0.08–1, ratio 3/4–4/3): ten tries at a
    /// random area and log-uniform aspect ratio inside the image, else the central crop at the nearest valid ratio.
    static func randomResizedCropWindow(width: Int, height: Int, random: inout SplitMix64) -> (left: Int, top: Int, width: Int, height: Int) {
        let area = Double(width * height)
        let logRatio = (log(3.0 / 4.0), log(4.0 / 3.0))
        for _ in 0..<10 {
            let targetArea = area * (0.08 + 0.92 * random.nextUnit())
            let aspect = exp(logRatio.0 + (logRatio.1 - logRatio.0) * random.nextUnit())
            let w = Int((targetArea * aspect).squareRoot().rounded())
            let h = Int((targetArea / aspect).squareRoot().rounded())
            if w > 0, h > 0, w <= width, h <= height {
                let top = Int(random.next() % UInt64(height - h + 1))
                let left = Int(random.next() % UInt64(width - w + 1))
                return (left, top, w, h)
            }
        }
        let ratio = Double(width) / Double(height)
        var w = width, h = height
        if ratio < 3.0 / 4.0 { h = min(height, Int((Double(w) / (3.0 / 4.0)).rounded())) }
        else if ratio > 4.0 / 3.0 { w = min(width, Int((Double(h) * (4.0 / 3.0)).rounded())) }
        return ((width - w) / 2, (height - h) / 2, w, h)
    }
}

