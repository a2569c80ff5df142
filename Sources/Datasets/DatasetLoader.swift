import Foundation

/// Finds a dataset's IDX files on disk and turns them into preprocessed `LabeledImages`.
public enum DatasetLoader {
    /// Where Debian's `dataset-*` packages install (e.g. `dataset-fashion-mnist`).
    public static let systemDatasetsDirectory = "/usr/share/datasets"

    /// Loads `spec`: finds its files (see `searchDirectories`), decodes them (cached per process), keeps the first
    /// `spec.limit` images, pads and normalises.
    public static func load(_ spec: DatasetSpec, projectDirectory: URL) throws -> LabeledImages {
        try spec.validate()
        if spec.isImageSource { return try ImageSetLoader.load(spec, projectDirectory: projectDirectory) }
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

    /// Every file `spec` reads: an image set's list or classes file and its images (in load order), or the IDX pair.
    public static func files(of spec: DatasetSpec, projectDirectory: URL) throws -> [URL] {
        try spec.validate()
        guard spec.isImageSource else {
            let files = try locateFiles(for: spec, projectDirectory: projectDirectory)
            return [files.images, files.labels]
        }
        var files = try ImageSetLoader.list(spec, projectDirectory: projectDirectory).entries.map(\.url)
        if spec.name == "image-list", let path = spec.path { files.insert(ImageSetLoader.resolve(path, against: projectDirectory), at: 0) }
        if let classes = spec.classes { files.insert(ImageSetLoader.resolve(classes, against: projectDirectory), at: 0) }
        return files
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
