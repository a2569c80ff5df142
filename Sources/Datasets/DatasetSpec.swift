import Foundation

/// Which half of an IDX dataset to load.
public enum DatasetSplit: String, Codable, Sendable, CaseIterable {
    case train, test

    /// Prefix of the split's IDX file names (`train-images-idx3-ubyte`, `t10k-images-idx3-ubyte`).
    var idxFilePrefix: String {
        switch self {
        case .train: return "train"
        case .test: return "t10k"
        }
    }
}

/// Fixed facts about a dataset the loader knows: its normalisation constants and class names.
struct KnownDataset: Sendable {
    let name: String
    let defaultMean: Double
    let defaultStd: Double
    let classNames: [String]

    static let all: [KnownDataset] = [
        KnownDataset(
            name: "fashion-mnist", defaultMean: 0.2860, defaultStd: 0.3530,
            classNames: ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]),
        KnownDataset(
            name: "mnist", defaultMean: 0.1307, defaultStd: 0.3081,
            classNames: (0...9).map(String.init)),
    ]

    static func named(_ name: String) throws -> KnownDataset {
        guard let dataset = all.first(where: { $0.name == name }) else {
            throw DatasetError.unknownDataset(name: name, knownNames: all.map(\.name))
        }
        return dataset
    }
}

/// Channels a model takes, and their order.
public enum ImageChannels: String, Codable, Sendable, CaseIterable {
    case gray, rgb, bgr
    public var count: Int { self == .gray ? 1 : 3 }
}

/// `resize:` — the shorter side to N pixels keeping the aspect ratio (torchvision's `Resize(N)`), or exactly H × W.
public enum ImageResize: Hashable, Sendable {
    case shorterSide(Int)
    case exact(height: Int, width: Int)
}

/// What a folder or list does with an image it cannot use: stop (`fail`), or leave it out and count it (`skip`).
public enum ImageErrorPolicy: String, Codable, Sendable, CaseIterable { case fail, skip }

/// What an image with an alpha channel does: refused (`error`), or the alpha dropped as Pillow's `convert` does.
public enum AlphaPolicy: String, Codable, Sendable, CaseIterable { case error, drop }

/// Names one split of a dataset plus the preprocessing every consumer must agree on.
///
/// Sources: the IDX shortcuts `fashion-mnist` and `mnist` (with `split`); image files: `image-folder` (class
/// subfolders, ImageNet layout; a folder of images without subfolders is an unlabeled set) and `image-list`
/// (lines `relative/path.jpg LABEL`), both at `path`; arrays of 8-bit pixels: `npy` (an `.npz` with `images` and
/// `labels`, or a `.npy` of images, at `path`; float32 images are taken as already preprocessed), `cifar10` (the
/// official binary batches, with `split`) and `idx` (any IDX image file at `path`, its labels file at `labels`).
///
/// Project convention for (Fashion-)MNIST models: zero-pad 28→32 with pixel value 0 *before* normalising, then
/// x = (pixel/255 − mean)/std, one channel, NCHW. Image files: decode → channels → resize → center crop → pad →
/// x = (pixel/255 − mean[c])/std[c], NCHW.
public struct DatasetSpec: Codable, Hashable, Sendable {
    /// The source: "fashion-mnist", "mnist", "image-folder", "image-list", "npy", "cifar10" or "idx".
    public var name: String
    /// Which half of an IDX shortcut or of CIFAR-10 (nil for the other sources).
    public var split: DatasetSplit?
    /// Use only the first N images (nil = all; a limit above the split's size also means all).
    public var limit: Int?
    /// Zero padding on each side, pixel value 0 (default 2 for the IDX datasets: 28→32; 0 for image files).
    public var pad: Int
    /// Normalisation: x = (pixel/255 − mean[c])/std[c]; one value for every channel, or one per channel.
    public var mean: [Double]
    public var std: [Double]
    /// IDX: the directory holding the four files. image-list: the directory the list's paths are relative to
    /// (default: the list's folder). Relative paths resolve against the project directory.
    public var root: String?
    /// image-folder: the folder; image-list: the list file; npy: the .npz/.npy file; idx: the images file.
    public var path: String?
    /// idx: the labels file (without it the set is unlabeled).
    public var labels: String?
    /// Channels the model takes (default: gray for the IDX datasets, rgb for image files).
    public var channels: ImageChannels?
    public var resize: ImageResize?
    /// Center crop to N × N after resizing.
    public var crop: Int?
    /// Training reads only: a random crop of 8–100 % of the area at aspect 3/4–4/3 resized to N × N
    /// (torchvision's `RandomResizedCrop(N)`), in place of resize and crop. Other reads take the central N × N
    /// after resizing the shorter side to N.
    public var randomResizedCrop: Int?
    /// Training reads only: mirror each image left–right with probability 1/2.
    public var flip: Bool?
    public var onError: ImageErrorPolicy?
    public var alpha: AlphaPolicy?
    /// image-folder: a text file with one class name per line (that order is the label order), instead of the
    /// sorted subfolder names. image-list: class names for the labels 0, 1, …
    public var classes: String?

    public static let knownNames: [String] = KnownDataset.all.map(\.name)
    /// Sources whose pixels go through the image preprocessing (channels, resize, crop, pad, mean/std).
    public static let imageSourceNames = ["image-folder", "image-list", "npy", "cifar10", "idx"]
    public static let sourceNames = knownNames + imageSourceNames
    /// Sources that need `path`; `cifar10` needs `split` instead.
    static let pathSourceNames = ["image-folder", "image-list", "npy", "idx"]

    public var isImageSource: Bool { Self.imageSourceNames.contains(name) }
    /// True when the declared preprocessing draws random numbers in training.
    public var hasAugmentation: Bool { randomResizedCrop != nil || flip == true }
    public var effectiveChannels: ImageChannels { channels ?? (isImageSource && name != "idx" ? .rgb : .gray) }

    /// `mean`/`std` nil → the dataset's default (fashion-mnist 0.2860/0.3530, mnist 0.1307/0.3081).
    public init(name: String, split: DatasetSplit, limit: Int? = nil, pad: Int = 2,
                mean: Double? = nil, std: Double? = nil, root: String? = nil) throws {
        let dataset = try KnownDataset.named(name)
        self.name = name
        self.split = split
        self.limit = limit
        self.pad = pad
        self.mean = [mean ?? dataset.defaultMean]
        self.std = [std ?? dataset.defaultStd]
        self.root = root
        try validate()
    }

    /// A dataset that goes through the image preprocessing (`imageSourceNames`): files or arrays at `path`, or
    /// CIFAR-10's `split`. Without `mean`/`std`: x = pixel/255.
    public init(imageSource name: String, path: String? = nil, split: DatasetSplit? = nil, labels: String? = nil,
                limit: Int? = nil, channels: ImageChannels? = nil,
                resize: ImageResize? = nil, crop: Int? = nil, pad: Int = 0, mean: [Double]? = nil, std: [Double]? = nil,
                root: String? = nil, classes: String? = nil, onError: ImageErrorPolicy? = nil, alpha: AlphaPolicy? = nil,
                randomResizedCrop: Int? = nil, flip: Bool? = nil) throws {
        guard Self.imageSourceNames.contains(name) else {
            throw DatasetError.unknownDataset(name: name, knownNames: Self.imageSourceNames)
        }
        self.name = name
        self.split = split
        self.labels = labels
        self.randomResizedCrop = randomResizedCrop
        self.flip = flip
        self.limit = limit
        self.pad = pad
        self.mean = mean ?? [0]
        self.std = std ?? [1]
        self.root = root
        self.path = path
        self.channels = channels
        self.resize = resize
        self.crop = crop
        self.onError = onError
        self.alpha = alpha
        self.classes = classes
        try validate()
    }

    /// Checks every field. The fields are public `var`s, so the loader calls this again: a spec changed after
    /// construction (e.g. `spec.limit = userValue`) must fail with a message, not crash the preprocessing.
    func validate() throws {
        if Self.pathSourceNames.contains(name) {
            let what = ["image-folder": "the folder", "image-list": "the list file", "npy": "the .npz or .npy file", "idx": "the IDX images file"][name]!
            guard let path, !path.isEmpty else { throw DatasetError.invalidSpec(reason: "source \(name) needs 'path' (\(what))") }
        } else if name == "cifar10" {
            guard split != nil else { throw DatasetError.invalidSpec(reason: "source cifar10 needs 'split' (train or test)") }
        } else {
            _ = try KnownDataset.named(name)
            guard split != nil else { throw DatasetError.invalidSpec(reason: "source \(name) needs 'split' (train or test)") }
        }
        if let limit, limit < 1 {
            throw DatasetError.invalidSpec(reason: "limit must be at least 1 (or absent for all images), got \(limit)")
        }
        guard pad >= 0 else {
            throw DatasetError.invalidSpec(reason: "pad must be 0 or more pixels, got \(pad)")
        }
        let channelCount = effectiveChannels.count
        for (field, values) in [("mean", mean), ("std", std)] {
            guard values.count == 1 || values.count == channelCount else {
                throw DatasetError.invalidSpec(reason: "\(field) needs one value or one per channel (\(channelCount) for \(effectiveChannels.rawValue)), got \(values.count)")
            }
            guard values.allSatisfy(\.isFinite) else {
                throw DatasetError.invalidSpec(reason: "\(field) must be finite numbers, got \(values)")
            }
        }
        guard std.allSatisfy({ $0 > 0 }) else {
            throw DatasetError.invalidSpec(reason: "std must be greater than 0, got \(std)")
        }
        switch resize {
        case .shorterSide(let size)? where size < 1, .exact(let size, _)? where size < 1, .exact(_, let size)? where size < 1:
            throw DatasetError.invalidSpec(reason: "resize must be at least 1 pixel")
        default: break
        }
        if let crop, crop < 1 { throw DatasetError.invalidSpec(reason: "crop must be at least 1 pixel, got \(crop)") }
        if !isImageSource, channels != nil || resize != nil || crop != nil || path != nil || classes != nil || hasAugmentation {
            throw DatasetError.invalidSpec(reason: "channels, resize, crop, path, classes, random_resized_crop and flip apply to \(Self.imageSourceNames.joined(separator: ", ")) sources, not to \(name)")
        }
        if labels != nil, name != "idx" { throw DatasetError.invalidSpec(reason: "labels (an IDX labels file) applies to the idx source, not to \(name)") }
        if split != nil, isImageSource, name != "cifar10" { throw DatasetError.invalidSpec(reason: "split applies to cifar10, fashion-mnist and mnist, not to \(name) (which reads 'path')") }
        if let side = randomResizedCrop {
            guard side >= 1 else { throw DatasetError.invalidSpec(reason: "random_resized_crop must be at least 1 pixel, got \(side)") }
            guard resize == nil, crop == nil else {
                throw DatasetError.invalidSpec(reason: "random_resized_crop replaces resize and crop (it crops a random part and resizes it to \(side)×\(side)); give one or the other")
            }
        }
    }

    /// MNN's normalisation, x = (pixel − mean)·normal on 0–255, as this spec's (pixel/255 − mean)/std:
    /// mean/255 and 1/(255·normal), per channel.
    public static func fromMNN(mean: [Double], normal: [Double]) throws -> (mean: [Double], std: [Double]) {
        guard normal.allSatisfy({ $0 > 0 && $0.isFinite }) else {
            throw DatasetError.invalidSpec(reason: "normal (MNN's multiplier on 0–255) must be positive numbers, got \(normal)")
        }
        return (mean.map { $0 / 255 }, normal.map { 1 / (255 * $0) })
    }

    /// The normalisation of channel `c`.
    public func mean(ofChannel c: Int) -> Double { mean.count == 1 ? mean[0] : mean[c] }
    public func std(ofChannel c: Int) -> Double { std.count == 1 ? std[0] : std[c] }

    /// Parses `NAME:SPLIT`, e.g. "fashion-mnist:test" or "mnist:train", with all other fields at their defaults.
    public init(shorthand: String) throws {
        let form = "expected NAME:SPLIT with NAME one of \(Self.knownNames.joined(separator: ", ")) "
            + "and SPLIT one of \(DatasetSplit.allCases.map(\.rawValue).joined(separator: ", ")) "
            + "(e.g. 'fashion-mnist:test')"
        let parts = shorthand.split(separator: ":", omittingEmptySubsequences: false)
            .map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw DatasetError.invalidShorthand(text: shorthand, reason: form)
        }
        guard Self.knownNames.contains(parts[0]) else {
            throw DatasetError.invalidShorthand(text: shorthand, reason: "unknown dataset '\(parts[0])'; \(form)")
        }
        guard let split = DatasetSplit(rawValue: parts[1]) else {
            throw DatasetError.invalidShorthand(text: shorthand, reason: "unknown split '\(parts[1])'; \(form)")
        }
        try self.init(name: parts[0], split: split)
    }

    // Decoding goes through the throwing initialisers so that manifests may omit pad/mean/std and still get the
    // dataset's defaults, and so that a decoded spec is validated exactly like one built in code. Encoding writes a
    // single mean/std as a number and leaves absent fields out, so the keys of IDX specs stay what they were.
    private enum CodingKeys: String, CodingKey {
        case name, split, limit, pad, mean, std, root, path, labels, channels, resize, crop, onError = "on_error", alpha, classes
        case randomResizedCrop = "random_resized_crop", flip
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        func numbers(_ key: CodingKeys) throws -> [Double]? {
            if let one = try? container.decodeIfPresent(Double.self, forKey: key) { return [one] }
            return try container.decodeIfPresent([Double].self, forKey: key)
        }
        do {
            let name = try container.decode(String.self, forKey: .name)
            if Self.imageSourceNames.contains(name) {
                var resize: ImageResize?
                if let side = try? container.decodeIfPresent(Int.self, forKey: .resize) { resize = .shorterSide(side) }
                else if let pair = try container.decodeIfPresent([Int].self, forKey: .resize), pair.count == 2 { resize = .exact(height: pair[0], width: pair[1]) }
                try self.init(imageSource: name, path: container.decodeIfPresent(String.self, forKey: .path),
                              split: container.decodeIfPresent(DatasetSplit.self, forKey: .split),
                              labels: container.decodeIfPresent(String.self, forKey: .labels),
                              limit: container.decodeIfPresent(Int.self, forKey: .limit),
                              channels: container.decodeIfPresent(ImageChannels.self, forKey: .channels), resize: resize,
                              crop: container.decodeIfPresent(Int.self, forKey: .crop),
                              pad: container.decodeIfPresent(Int.self, forKey: .pad) ?? 0, mean: numbers(.mean), std: numbers(.std),
                              root: container.decodeIfPresent(String.self, forKey: .root),
                              classes: container.decodeIfPresent(String.self, forKey: .classes),
                              onError: container.decodeIfPresent(ImageErrorPolicy.self, forKey: .onError),
                              alpha: container.decodeIfPresent(AlphaPolicy.self, forKey: .alpha),
                              randomResizedCrop: container.decodeIfPresent(Int.self, forKey: .randomResizedCrop),
                              flip: container.decodeIfPresent(Bool.self, forKey: .flip))
            } else {
                try self.init(
                    name: name,
                    split: container.decode(DatasetSplit.self, forKey: .split),
                    limit: container.decodeIfPresent(Int.self, forKey: .limit),
                    pad: container.decodeIfPresent(Int.self, forKey: .pad) ?? 2,
                    mean: numbers(.mean)?.first,
                    std: numbers(.std)?.first,
                    root: container.decodeIfPresent(String.self, forKey: .root))
            }
        } catch let error as DatasetError {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(codingPath: decoder.codingPath, debugDescription: error.description,
                                      underlyingError: error))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(name, forKey: .name)
        try container.encodeIfPresent(split, forKey: .split)
        try container.encodeIfPresent(limit, forKey: .limit)
        try container.encode(pad, forKey: .pad)
        if mean.count == 1 { try container.encode(mean[0], forKey: .mean) } else { try container.encode(mean, forKey: .mean) }
        if std.count == 1 { try container.encode(std[0], forKey: .std) } else { try container.encode(std, forKey: .std) }
        try container.encodeIfPresent(root, forKey: .root)
        try container.encodeIfPresent(path, forKey: .path)
        try container.encodeIfPresent(labels, forKey: .labels)
        try container.encodeIfPresent(channels, forKey: .channels)
        switch resize {
        case .shorterSide(let side)?: try container.encode(side, forKey: .resize)
        case .exact(let height, let width)?: try container.encode([height, width], forKey: .resize)
        case nil: break
        }
        try container.encodeIfPresent(crop, forKey: .crop)
        try container.encodeIfPresent(onError, forKey: .onError)
        try container.encodeIfPresent(alpha, forKey: .alpha)
        try container.encodeIfPresent(classes, forKey: .classes)
        try container.encodeIfPresent(randomResizedCrop, forKey: .randomResizedCrop)
        try container.encodeIfPresent(flip, forKey: .flip)
    }

    /// Class names in label order.
    public var classNames: [String] {
        // The initialiser rejects unknown names; a spec mutated to an unknown name afterwards gets no names.
        (try? KnownDataset.named(name))?.classNames ?? []
    }
}

/// The preprocessing a model was calibrated or trained with, recorded in its file (`qatflow.preprocessing`) so that
/// `eval` and `infer` apply it to image files without the user repeating it. Training-only augmentation is not
/// part of it: a `random_resized_crop: N` set is recorded as its deterministic form, resize N + crop N.
public struct ImagePreprocessing: Codable, Equatable, Sendable {
    /// The source the model saw (`fashion-mnist`, `image-folder`, …): which decoding step comes first.
    public var source: String?
    public var channels: ImageChannels
    /// One value (the shorter side) or [height, width].
    public var resize: [Int]?
    public var crop: Int?
    public var pad: Int
    public var mean: [Double]
    public var std: [Double]

    /// The metadata key of model files.
    public static let metadataKey = "qatflow.preprocessing"

    public init(_ spec: DatasetSpec) {
        source = spec.name
        channels = spec.effectiveChannels
        switch spec.resize {
        case .shorterSide(let side)?: resize = [side]
        case .exact(let height, let width)?: resize = [height, width]
        case nil: resize = spec.randomResizedCrop.map { [$0] }
        }
        crop = spec.crop ?? spec.randomResizedCrop
        pad = spec.pad
        mean = spec.mean
        std = spec.std
    }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }

    public init?(json: String?) {
        guard let json, let value = try? JSONDecoder().decode(Self.self, from: Data(json.utf8)) else { return nil }
        self = value
    }

    /// One line for logs: "rgb, resize 256, crop 224, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]".
    public var summary: String {
        var parts = [channels.rawValue]
        if let resize { parts.append("resize " + resize.map(String.init).joined(separator: "x")) }
        if let crop { parts.append("crop \(crop)") }
        if pad > 0 { parts.append("pad \(pad)") }
        parts.append("mean \(mean), std \(std)")
        return parts.joined(separator: ", ")
    }
}

extension DatasetSpec {
    /// This spec with a model's recorded preprocessing in place of its own (image sources only).
    public func adopting(_ preprocessing: ImagePreprocessing) throws -> DatasetSpec {
        guard isImageSource else { return self }
        var spec = self
        spec.channels = preprocessing.channels
        switch preprocessing.resize?.count {
        case 1?: spec.resize = .shorterSide(preprocessing.resize![0])
        case 2?: spec.resize = .exact(height: preprocessing.resize![0], width: preprocessing.resize![1])
        default: spec.resize = nil
        }
        spec.crop = preprocessing.crop
        spec.randomResizedCrop = nil
        spec.flip = nil
        spec.pad = preprocessing.pad
        spec.mean = preprocessing.mean
        spec.std = preprocessing.std
        try spec.validate()
        return spec
    }
}
