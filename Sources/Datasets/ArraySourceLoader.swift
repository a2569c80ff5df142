import Foundation

/// Opens the sources held as arrays in one or a few files: `npy` (.npz/.npy), `cifar10` (binary batches) and
/// `idx` (any IDX pair). 8-bit pixels go through the image preprocessing like decoded files; float32 `npy` images
/// are taken as already preprocessed.
enum ArraySourceLoader {
    static func open(_ spec: DatasetSpec, projectDirectory: URL) throws -> any ImageDataset {
        var labels: [Int]?
        var classNames: [String]?
        let images: ArrayImages
        let origin: String
        switch spec.name {
        case "npy":
            let url = ImageSetLoader.resolve(spec.path ?? "", against: projectDirectory)
            let dataset = try ArrayDatasetReader.read(url)
            (images, labels, origin) = (dataset.images, dataset.labels, url.path)
        case "cifar10":
            let directory = try cifarDirectory(spec, projectDirectory: projectDirectory)
            let read = try CIFAR10Reader.read(split: spec.split ?? .test, in: directory)
            (images, labels, classNames, origin) = (read.images, read.labels, read.classNames, directory.path)
        case "idx":
            let url = ImageSetLoader.resolve(spec.path ?? "", against: projectDirectory)
            let idx = try IDXReader.readImages(url)
            images = .bytes(count: idx.count, height: idx.rows, width: idx.columns, channels: 1, samples: idx.pixels)
            origin = url.path
            if let labelsPath = spec.labels {
                let labelsURL = ImageSetLoader.resolve(labelsPath, against: projectDirectory)
                let read = try IDXReader.readLabels(labelsURL, classCount: 256)
                guard read.count == idx.count else {
                    throw DatasetError.malformedFile(path: labelsURL.path, byteOffset: 4, problem: "expected \(idx.count) labels (one per image in \(url.lastPathComponent)), header says \(read.count)")
                }
                labels = read
            }
        default:
            throw DatasetError.unknownDataset(name: spec.name, knownNames: ["npy", "cifar10", "idx"])
        }
        let kept = min(spec.limit ?? images.count, images.count)
        let keptLabels = labels.map { Array($0.prefix(kept)) } ?? [Int](repeating: 0, count: kept)
        if let given = spec.classes {
            classNames = try ImageSetLoader.readClassNames(ImageSetLoader.resolve(given, against: projectDirectory))
        }
        let names = classNames ?? (labels == nil ? ["(unlabeled)"] : (0...(keptLabels.max() ?? 0)).map(String.init))
        if let bad = keptLabels.firstIndex(where: { $0 >= names.count }) {
            throw DatasetError.badImageSet(path: origin, problem: "label \(keptLabels[bad]) of image #\(bad) is outside 0..<\(names.count) (the \(names.count) classes\(spec.classes.map { " in \($0)" } ?? ""))")
        }
        switch images {
        case let .bytes(_, height, width, channels, samples):
            let size = height * width * channels
            return try StreamingImageSet(spec: spec, raw: .bytes(height: height, width: width, channels: channels,
                                                                  samples: kept == images.count ? samples : Array(samples.prefix(kept * size)), origin: origin),
                                         labels: keptLabels, classNames: names, isLabeled: labels != nil)
        case let .floats(_, channels, height, width, values):
            // numpy's natural image layout is channels-last; a float array stored that way would be read with its
            // height as channels. No CNN input has more than 4 channels and a width of 1, 3 or 4.
            if channels > 4, [1, 3, 4].contains(width) {
                throw DatasetError.badImageSet(path: origin, problem: "holds float32 images of shape N×\(channels)×\(height)×\(width), which looks channels-last (N×H×W×C); float32 images must be N×C×H×W: store images.transpose(0, 3, 1, 2), or uint8 pixels N×H×W×C for qatflow to preprocess")
            }
            // Already preprocessed: any declared preprocessing would be applied twice, or not at all.
            let declared = [spec.resize != nil ? "resize" : nil, spec.crop != nil ? "crop" : nil, spec.pad != 0 ? "pad" : nil,
                            spec.mean != [0] ? "mean" : nil, spec.std != [1] ? "std" : nil, spec.hasAugmentation ? "random_resized_crop/flip" : nil]
                .compactMap { $0 }
            guard declared.isEmpty else {
                throw DatasetError.badImageSet(path: origin, problem: "holds float32 images, taken as already preprocessed (N×C×H×W); remove \(declared.joined(separator: ", ")) from the dataset, or store uint8 pixels (N×H×W×C) to have qatflow preprocess them")
            }
            if let declaredChannels = spec.channels, declaredChannels.count != channels {
                throw DatasetError.badImageSet(path: origin, problem: "holds \(channels)-channel float32 images, but the dataset declares channels: \(declaredChannels.rawValue)")
            }
            var memory = try LabeledImages(count: kept, channels: channels, height: height, width: width,
                                           pixels: kept == images.count ? values : Array(values.prefix(kept * channels * height * width)),
                                           labels: keptLabels, classNames: names)
            memory.isLabeled = labels != nil
            return memory
        }
    }

    static func files(of spec: DatasetSpec, projectDirectory: URL) throws -> [URL] {
        switch spec.name {
        case "cifar10":
            return try CIFAR10Reader.files(split: spec.split ?? .test, in: cifarDirectory(spec, projectDirectory: projectDirectory))
        default:
            var files = [ImageSetLoader.resolve(spec.path ?? "", against: projectDirectory)]
            if let labels = spec.labels { files.append(ImageSetLoader.resolve(labels, against: projectDirectory)) }
            if let classes = spec.classes { files.append(ImageSetLoader.resolve(classes, against: projectDirectory)) }
            return files
        }
    }

    /// The first of `root`, `datasets/cifar10`, `/usr/share/datasets/cifar10` that holds the split's batches.
    static func cifarDirectory(_ spec: DatasetSpec, projectDirectory: URL) throws -> URL {
        let directories = DatasetLoader.searchDirectories(for: spec, projectDirectory: projectDirectory)
        let split = spec.split ?? .test
        for directory in directories where (try? CIFAR10Reader.files(split: split, in: directory)) != nil {
            return directory
        }
        throw DatasetError.filesNotFound(
            dataset: "cifar10:\(split.rawValue)",
            missingFiles: split == .train ? CIFAR10Reader.trainFiles : [CIFAR10Reader.testFile],
            searchedDirectories: directories.map(\.path))
    }
}
