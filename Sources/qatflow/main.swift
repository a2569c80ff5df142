import ArgumentParser
import Datasets
import Foundation
import Pipeline

/// The `qatflow` command line: argument parsing and printing only; all work is in the Pipeline target.
struct Qatflow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "qatflow",
        abstract: "Quantize CNNs: convert ONNX, calibrate, quantization-aware training, int8 inference, export.",
        version: QatflowVersion.string,
        subcommands: [RunCommand.self, PlanCommand.self, StatusCommand.self, ShowCommand.self, ReportCommand.self, GCCommand.self,
                      StagesCommand.self, ConvertCommand.self, InspectCommand.self, InferCommand.self, EvalCommand.self, BenchCommand.self, BenchTrainCommand.self, BenchDataCommand.self, RunStageCommand.self, CancelCommand.self, QuantizeCommand.self, TrainCommand.self, QATCommand.self, ExportCommand.self]
    )
}

/// Options shared by commands that read a manifest.
struct ManifestOptions: ParsableArguments {
    @Argument(help: "The pipeline manifest (YAML).")
    var manifest: String

    @Argument(help: "Stages to run (ids, or instance names such as 'qat[bits=4]') together with the stages they need; default: every stage.")
    var targets: [String] = []

    @Option(name: .customLong("set"), help: ArgumentHelp("Override a parameter: STAGE.PARAM=VALUE, or matrix.NAME=[v1,v2]. Repeatable.", valueName: "STAGE.PARAM=VALUE"))
    var overrides: [String] = []

    @Option(help: "Project directory: relative paths in the manifest are resolved here. Default: the current directory.")
    var project: String?

    @Option(name: .customLong("cache-dir"), help: "Cache and run records. Default: PROJECT/.qatflow")
    var cacheDirectory: String?

    var projectURL: URL {
        URL(fileURLWithPath: project ?? FileManager.default.currentDirectoryPath).standardizedFileURL
    }

    var store: ArtifactStore {
        ArtifactStore(root: cacheDirectory.map { URL(fileURLWithPath: $0).standardizedFileURL }
                      ?? projectURL.appendingPathComponent(".qatflow"))
    }

    func makePlan() throws -> Plan {
        try Plan.load(manifest: URL(fileURLWithPath: manifest), displayName: manifest, projectDirectory: projectURL,
                      overrides: overrides, registry: .production).restricted(to: targets)
    }
}

/// Prints a user-facing error to stderr and exits non-zero, without ArgumentParser's usage text.
func fail(_ error: Error) -> ExitCode {
    FileHandle.standardError.write(Data("\(error)\n".utf8))
    return ExitCode.failure
}

func printLine(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

/// A note for the user that is not the command's result (stderr).
func printError(_ text: String) {
    FileHandle.standardError.write(Data((text + "\n").utf8))
}

Qatflow.main()

/// `--dataset` and its preprocessing flags, shared by the commands that read images: `NAME:SPLIT` (an IDX dataset),
/// a folder (image-folder: class subfolders, or a folder of unlabeled images) or a `.txt` list (image-list).
struct DatasetOptions: ParsableArguments {
    @Option(help: "NAME:SPLIT (fashion-mnist:test, cifar10:test), a folder of class subfolders or of images, a .txt list of 'path LABEL' lines, an .npz/.npy array file, or an IDX images file (with --labels) (default: the command's).")
    var dataset: String?
    @Option(help: "idx: the IDX labels file of --dataset's images.") var labels: String?
    @Option(help: "cifar10: the folder holding cifar-10-batches-bin (default: datasets/cifar10, /usr/share/datasets/cifar10).") var root: String?

    @Option(help: "gray, rgb or bgr (default: gray for NAME:SPLIT, rgb for image files).") var channels: String?
    @Option(help: "Resize the shorter side to N (bilinear with antialiasing, as torchvision/Pillow), or HxW for an exact size.") var resize: String?
    @Option(help: "Center crop to N×N after resizing.") var crop: Int?
    @Option(help: "Zero padding per side, before normalising (default: 2 for NAME:SPLIT, 0 for image files).") var pad: Int?
    @Option(help: "x = (pixel/255 − mean)/std: one value or one per channel, comma-separated (MNN's 0–255 values: divide by 255).") var mean: String?
    @Option(help: "See --mean.") var std: String?
    @Option(help: "MNN's normalisation instead of --std: x = (pixel − mean)·normal on 0–255, so --mean is then on 0–255 too (e.g. --mean 123.675,116.28,103.53 --normal 0.0171,0.0175,0.0174).") var normal: String?
    @Option(help: "A file of class names, one per line (image-folder: their order is the label order).") var classes: String?
    @Option(name: .customLong("on-error"), help: "fail or skip: what an undecodable image does (image files).") var onError: String?
    @Option(help: "error or drop: what an image with an alpha channel does (image files).") var alpha: String?
    @Option(name: .customLong("random-resized-crop"), help: "Training: a random crop of 8–100 % of the area, resized to N×N (torchvision's RandomResizedCrop), instead of --resize/--crop.") var randomResizedCrop: Int?
    @Flag(help: "Training: mirror images left–right with probability 1/2.") var flip = false

    /// True when a preprocessing flag was given (otherwise `eval` uses what the model file recorded).
    var declaresPreprocessing: Bool {
        channels != nil || resize != nil || crop != nil || pad != nil || mean != nil || std != nil || normal != nil || randomResizedCrop != nil
    }

    /// The dataset as a spec; `isShorthand` when it is a plain NAME:SPLIT that stages can resolve themselves.
    func spec(default defaultReference: String) throws -> (spec: DatasetSpec, isShorthand: Bool) {
        let dataset = self.dataset ?? defaultReference
        func numbers(_ text: String?, _ flag: String) throws -> [Double]? {
            guard let text else { return nil }
            let values = text.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else { throw StageFailure("--\(flag) \(text): expected numbers separated by commas, e.g. 0.485,0.456,0.406") }
            return values.map { $0! }
        }
        var means = try numbers(mean, "mean"), stds = try numbers(std, "std")
        if let normal = try numbers(normal, "normal") {
            guard stds == nil else { throw StageFailure("give --std (on pixel/255) or MNN's --normal (on 0–255), not both") }
            (means, stds) = try DatasetSpec.fromMNN(mean: means ?? [0], normal: normal)
        }
        if let idx = try? DatasetSpec(shorthand: dataset) {
            guard channels == nil, resize == nil, crop == nil, classes == nil, onError == nil, alpha == nil, randomResizedCrop == nil, !flip, labels == nil, root == nil else {
                throw StageFailure("--dataset \(dataset) is an IDX dataset: --channels, --resize, --crop, --classes, --on-error and --alpha apply to image folders and lists")
            }
            guard (means?.count ?? 1) == 1, (stds?.count ?? 1) == 1 else { throw StageFailure("--dataset \(dataset) has one channel: --mean and --std take one number") }
            let plain = pad == nil && means == nil && stds == nil
            return (try DatasetSpec(name: idx.name, split: idx.split!, pad: pad ?? idx.pad, mean: means?.first, std: stds?.first), plain)
        }
        let lowercased = dataset.lowercased()
        var source = lowercased.hasSuffix(".txt") ? "image-list" : "image-folder"
        var path: String? = dataset, split: DatasetSplit?
        if lowercased.hasSuffix(".npz") || lowercased.hasSuffix(".npy") { source = "npy" }
        if lowercased.hasSuffix("-idx3-ubyte") || lowercased.hasSuffix("-idx3-ubyte.gz") || lowercased.hasSuffix(".idx") { source = "idx" }
        if lowercased.hasPrefix("cifar10:") {
            guard let named = DatasetSplit(rawValue: String(lowercased.dropFirst("cifar10:".count))) else {
                throw StageFailure("--dataset \(dataset): expected cifar10:train or cifar10:test")
            }
            (source, path, split) = ("cifar10", nil, named)
        }
        if labels != nil, source != "idx" { throw StageFailure("--labels applies to an IDX images file (--dataset ...-idx3-ubyte)") }
        if source == "image-folder", !dataset.contains("/") && !dataset.contains(".") && !FileManager.default.fileExists(atPath: dataset) && dataset.contains(":") {
            _ = try DatasetSpec(shorthand: dataset)  // throws the NAME:SPLIT explanation
        }
        func choice<T: RawRepresentable & CaseIterable>(_ text: String?, _ flag: String, _: T.Type) throws -> T? where T.RawValue == String {
            guard let text else { return nil }
            guard let value = T(rawValue: text) else { throw StageFailure("--\(flag) \(text): expected \(T.allCases.map(\.rawValue).joined(separator: ", "))") }
            return value
        }
        var size: ImageResize?
        if let resize {
            let parts = resize.lowercased().split(separator: "x").map { Int($0) }
            switch parts.count {
            case 1 where parts[0] != nil: size = .shorterSide(parts[0]!)
            case 2 where parts[0] != nil && parts[1] != nil: size = .exact(height: parts[0]!, width: parts[1]!)
            default: throw StageFailure("--resize \(resize): expected N (the shorter side) or HxW, e.g. 256 or 224x224")
            }
        }
        let spec = try DatasetSpec(imageSource: source, path: path, split: split, labels: labels,
                                   channels: try choice(channels, "channels", ImageChannels.self),
                                   resize: size, crop: crop, pad: pad ?? 0, mean: means, std: stds, root: root, classes: classes,
                                   onError: try choice(onError, "on-error", ImageErrorPolicy.self), alpha: try choice(alpha, "alpha", AlphaPolicy.self),
                                   randomResizedCrop: randomResizedCrop, flip: flip ? true : nil)
        return (spec, false)
    }

    /// The `dataset` parameter and the named datasets a stage run needs for it.
    func stageDataset(default defaultReference: String) throws -> (reference: String, datasets: [String: DatasetSpec]) {
        let (spec, isShorthand) = try spec(default: defaultReference)
        let reference = dataset ?? defaultReference
        return isShorthand ? (reference, [:]) : (reference, [reference: spec])
    }
}
