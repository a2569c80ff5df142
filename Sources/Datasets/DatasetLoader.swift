import Foundation

/// Finds a dataset's files and opens them as an `ImageDataset` every stage reads.
public enum DatasetLoader {
    /// Where Debian's `dataset-*` packages install (e.g. `dataset-fashion-mnist`).
    public static let systemDatasetsDirectory = "/usr/share/datasets"

    /// Bytes of preprocessed floats a set may hold in memory before it streams instead: 1 GiB, or
    /// `QATFLOW_DATASET_MEMORY_MB` megabytes.
    public static var defaultMemoryBudget: Int {
        if let text = ProcessInfo.processInfo.environment["QATFLOW_DATASET_MEMORY_MB"], let megabytes = Int(text), megabytes >= 0 {
            return megabytes << 20
        }
        return 1 << 30
    }

    /// Opens `spec`. The IDX shortcuts and sets whose preprocessed floats fit `memoryBudget` are decoded once and
    /// held in memory (`progress(done, total)` reports the decoding); larger sets, and any set with declared
    /// augmentation (it draws new crops every epoch), stream: each batch is decoded when it is read.
    public static func open(_ spec: DatasetSpec, projectDirectory: URL, memoryBudget: Int = defaultMemoryBudget,
                            progress: ((Int, Int) -> Void)? = nil) throws -> any ImageDataset {
        try spec.validate()
        guard spec.isImageSource else { return try loadIDXShortcut(spec, projectDirectory: projectDirectory) }
        let source = try openImageSource(spec, projectDirectory: projectDirectory)
        guard let streaming = source as? StreamingImageSet else { return source }
        let bytes = streaming.count.multipliedReportingOverflow(by: streaming.valuesPerImage * 4)
        if spec.hasAugmentation || bytes.overflow || bytes.partialValue > memoryBudget { return streaming }
        return try materialize(streaming, progress: progress)
    }

    /// `spec` decoded into memory, whatever its size (tests and small sets).
    public static func load(_ spec: DatasetSpec, projectDirectory: URL) throws -> LabeledImages {
        try spec.validate()
        guard spec.isImageSource else { return try loadIDXShortcut(spec, projectDirectory: projectDirectory) }
        let source = try openImageSource(spec, projectDirectory: projectDirectory)
        if let memory = source as? LabeledImages { return memory }
        return try materialize(source, progress: nil)
    }

    /// One PNG or JPEG file preprocessed as `preprocessing` says: a 1×C×H×W input.
    public static func preprocessImageFile(_ url: URL, with preprocessing: ImagePreprocessing) throws -> (shape: [Int], values: [Float]) {
        let spec = try DatasetSpec(imageSource: "image-folder", path: url.path).adopting(preprocessing)
        let image = try StreamingImageSet(spec: spec, raw: .files([url]), labels: [0], classNames: ["(unlabeled)"], isLabeled: false)
        return ([1, image.channels, image.height, image.width], try image.loadBatch([0]).pixels)
    }

    /// Every image in order, decoded in chunks (so progress can be shown); skipped images are left out.
    static func materialize(_ source: any ImageDataset, progress: ((Int, Int) -> Void)?) throws -> LabeledImages {
        var pixels: [Float] = [], labels: [Int] = []
        pixels.reserveCapacity(source.count * source.valuesPerImage)
        let chunk = 256
        for start in stride(from: 0, to: source.count, by: chunk) {
            let batch = try source.loadBatch(Array(start..<min(start + chunk, source.count)))
            pixels += batch.pixels
            labels += batch.labels
            progress?(min(start + chunk, source.count), source.count)
        }
        guard !labels.isEmpty else {
            throw DatasetError.badImageSet(path: (source as? StreamingImageSet)?.spec.path ?? "the dataset", problem: "every one of the \(source.count) images was skipped; the first: \(source.skippedImages.first ?? "")")
        }
        var images = try LabeledImages(count: labels.count, channels: source.channels, height: source.height, width: source.width,
                                       pixels: pixels, labels: labels, classNames: source.classNames)
        images.isLabeled = source.isLabeled
        images.skippedImages = source.skippedImages
        return images
    }

    /// fashion-mnist and mnist: the IDX pair (decoded once per process), the first `spec.limit` images, padded
    /// and normalised.
    static func loadIDXShortcut(_ spec: DatasetSpec, projectDirectory: URL) throws -> LabeledImages {
        let dataset = try KnownDataset.named(spec.name)
        let files = try locateFiles(for: spec, projectDirectory: projectDirectory)
        let images = try IDXCache.shared.images(files.images)
        let labels = try IDXCache.shared.labels(files.labels, classCount: dataset.classNames.count)
        guard images.count == labels.count else {
            throw DatasetError.malformedFile(
                path: files.labels.path, byteOffset: 4,
                problem: "expected \(images.count) labels (one per image in \(files.images.lastPathComponent)), "
                    + "header says \(labels.count)")
        }
        let keptCount = min(spec.limit ?? images.count, images.count)
        let preprocessor = ImagePreprocessor(pad: spec.pad, mean: spec.mean(ofChannel: 0), std: spec.std(ofChannel: 0))
        let processed = preprocessor.process(images, imageCount: keptCount)
        return try LabeledImages(
            count: keptCount, channels: 1, height: processed.height, width: processed.width,
            pixels: processed.pixels, labels: Array(labels.prefix(keptCount)), classNames: dataset.classNames)
    }

    /// The sources with image preprocessing: a streaming set, or (float32 `npy`, already preprocessed) the arrays.
    static func openImageSource(_ spec: DatasetSpec, projectDirectory: URL) throws -> any ImageDataset {
        switch spec.name {
        case "image-folder", "image-list":
            return try ImageSetLoader.open(spec, projectDirectory: projectDirectory)
        default:
            return try ArraySourceLoader.open(spec, projectDirectory: projectDirectory)
        }
    }

    /// Every file `spec` reads: an image set's list or classes file and its images (in load order), an array
    /// file, CIFAR-10's batches, or the IDX pair.
    public static func files(of spec: DatasetSpec, projectDirectory: URL) throws -> [URL] {
        try spec.validate()
        switch spec.name {
        case "image-folder", "image-list":
            var files = try ImageSetLoader.list(spec, projectDirectory: projectDirectory).entries.map(\.url)
            if spec.name == "image-list", let path = spec.path { files.insert(ImageSetLoader.resolve(path, against: projectDirectory), at: 0) }
            if let classes = spec.classes { files.insert(ImageSetLoader.resolve(classes, against: projectDirectory), at: 0) }
            return files
        case "npy", "idx", "cifar10":
            return try ArraySourceLoader.files(of: spec, projectDirectory: projectDirectory)
        default:
            let files = try locateFiles(for: spec, projectDirectory: projectDirectory)
            return [files.images, files.labels]
        }
    }

    /// Directories searched for `spec`'s files, in order: `spec.root` (relative to `projectDirectory` if
    /// relative), `<projectDirectory>/datasets/<name>/`, `/usr/share/datasets/<name>/`.
    public static func searchDirectories(for spec: DatasetSpec, projectDirectory: URL) -> [URL] {
        var directories: [URL] = []
        if let root = spec.root {
            let expanded = NSString(string: root).expandingTildeInPath
            directories.append(expanded.hasPrefix("/")
                ? URL(fileURLWithPath: expanded, isDirectory: true)
                : projectDirectory.appendingPathComponent(expanded, isDirectory: true))
        }
        directories.append(projectDirectory.appendingPathComponent("datasets/\(spec.name)", isDirectory: true))
        directories.append(URL(fileURLWithPath: "\(systemDatasetsDirectory)/\(spec.name)", isDirectory: true))
        return directories.map(\.standardizedFileURL)
    }

    /// IDX file names (without `.gz`) of one split.
    public static func fileNames(for split: DatasetSplit) -> (images: String, labels: String) {
        ("\(split.idxFilePrefix)-images-idx3-ubyte", "\(split.idxFilePrefix)-labels-idx1-ubyte")
    }

    /// The first searched directory holding both of the split's files (each plain or `.gz`; plain preferred since
    /// it needs no decompression). Both must come from one directory so images and labels cannot be mismatched.
    public static func locateFiles(for spec: DatasetSpec, projectDirectory: URL) throws -> (images: URL, labels: URL) {
        guard let split = spec.split else { throw DatasetError.invalidSpec(reason: "source \(spec.name) needs 'split' (train or test)") }
        let names = fileNames(for: split)
        let directories = searchDirectories(for: spec, projectDirectory: projectDirectory)
        for directory in directories {
            if let images = existingFile(names.images, in: directory),
               let labels = existingFile(names.labels, in: directory) {
                return (images, labels)
            }
        }
        throw DatasetError.filesNotFound(
            dataset: "\(spec.name):\(split.rawValue)", missingFiles: [names.images, names.labels],
            searchedDirectories: directories.map(\.path))
    }

    /// Forgets every decoded IDX file (frees memory; the next load reads from disk again).
    public static func clearCache() {
        IDXCache.shared.removeAll()
    }

    private static func existingFile(_ name: String, in directory: URL) -> URL? {
        for candidate in [name, name + ".gz"] {
            let url = directory.appendingPathComponent(candidate)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue {
                return url
            }
        }
        return nil
    }
}
