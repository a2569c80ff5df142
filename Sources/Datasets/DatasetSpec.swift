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

/// Names one split of a dataset plus the preprocessing every consumer must agree on.
///
/// Project convention for (Fashion-)MNIST models: zero-pad 28→32 with pixel value 0 *before* normalising, then
/// x = (pixel/255 − mean)/std, one channel, NCHW.
public struct DatasetSpec: Codable, Hashable, Sendable {
    /// "fashion-mnist" or "mnist".
    public var name: String
    public var split: DatasetSplit
    /// Use only the first N images (nil = all; a limit above the split's size also means all).
    public var limit: Int?
    /// Zero padding on each side, pixel value 0 (default 2: 28→32).
    public var pad: Int
    /// Normalisation: x = (pixel/255 − mean)/std.
    public var mean: Double
    public var std: Double
    /// Directory holding the four IDX files; relative paths resolve against the project directory.
    public var root: String?

    public static let knownNames: [String] = KnownDataset.all.map(\.name)

    /// `mean`/`std` nil → the dataset's default (fashion-mnist 0.2860/0.3530, mnist 0.1307/0.3081).
    public init(name: String, split: DatasetSplit, limit: Int? = nil, pad: Int = 2,
                mean: Double? = nil, std: Double? = nil, root: String? = nil) throws {
        let dataset = try KnownDataset.named(name)
        self.name = name
        self.split = split
        self.limit = limit
        self.pad = pad
        self.mean = mean ?? dataset.defaultMean
        self.std = std ?? dataset.defaultStd
        self.root = root
        try validate()
    }

    /// Checks every field. The fields are public `var`s, so the loader calls this again: a spec changed after
    /// construction (e.g. `spec.limit = userValue`) must fail with a message, not crash the preprocessing.
    func validate() throws {
        _ = try KnownDataset.named(name)
        if let limit, limit < 1 {
            throw DatasetError.invalidSpec(reason: "limit must be at least 1 (or absent for all images), got \(limit)")
        }
        guard pad >= 0 else {
            throw DatasetError.invalidSpec(reason: "pad must be 0 or more pixels, got \(pad)")
        }
        guard mean.isFinite else {
            throw DatasetError.invalidSpec(reason: "mean must be a finite number, got \(mean)")
        }
        guard std.isFinite, std > 0 else {
            throw DatasetError.invalidSpec(reason: "std must be a finite number greater than 0, got \(std)")
        }
    }

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

    // Decoding goes through the throwing initialiser so that manifests may omit pad/mean/std and still get the
    // dataset's defaults, and so that a decoded spec is validated exactly like one built in code.
    private enum CodingKeys: String, CodingKey {
        case name, split, limit, pad, mean, std, root
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        do {
            try self.init(
                name: container.decode(String.self, forKey: .name),
                split: container.decode(DatasetSplit.self, forKey: .split),
                limit: container.decodeIfPresent(Int.self, forKey: .limit),
                pad: container.decodeIfPresent(Int.self, forKey: .pad) ?? 2,
                mean: container.decodeIfPresent(Double.self, forKey: .mean),
                std: container.decodeIfPresent(Double.self, forKey: .std),
                root: container.decodeIfPresent(String.self, forKey: .root))
        } catch let error as DatasetError {
            throw DecodingError.dataCorrupted(
                DecodingError.Context(codingPath: decoder.codingPath, debugDescription: error.description,
                                      underlyingError: error))
        }
    }

    /// Class names in label order.
    public var classNames: [String] {
        // The initialiser rejects unknown names; a spec mutated to an unknown name afterwards gets no names.
        (try? KnownDataset.named(name))?.classNames ?? []
    }
}
