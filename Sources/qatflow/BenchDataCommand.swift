import ArgumentParser
import Datasets
import Foundation
import Pipeline

/// `qatflow bench-data`: how fast the streaming reader decodes and preprocesses a dataset's images, to compare
/// with the training step it feeds. A benchmark, not a stage: it writes nothing.
struct BenchDataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-data",
        abstract: "Time decoding + preprocessing of a dataset's images, batch by batch, as training streams them.",
        discussion: """
            Reads --batches batches of --batch images in a seeded shuffled order straight from the files (the \
            streaming reader, whatever the set's size), with the set's declared augmentation drawn as in training, \
            after one untimed batch. Prints images per second and the peak resident memory.
            """)

    @OptionGroup var data: DatasetOptions
    @Option(help: "Images per batch.") var batch = 32
    @Option(help: "Timed batches.") var batches = 10
    @Option(help: "Decoding threads.") var threads = 2
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        do {
            guard batch >= 1, batches >= 1, threads >= 1 else { throw StageFailure("--batch, --batches and --threads must be at least 1") }
            guard let dataset = data.dataset else { throw StageFailure("--dataset is required (a folder, a .txt list or an array file)") }
            let opened = try DatasetLoader.open(try data.spec(default: dataset).spec,
                                                projectDirectory: URL(fileURLWithPath: FileManager.default.currentDirectoryPath), memoryBudget: 0)
            guard let set = opened as? StreamingImageSet else { throw StageFailure("--dataset \(dataset): only image files and 8-bit arrays are decoded per batch; this set is read once into memory") }
            set.threads = threads
            var order = Array(0..<set.count)
            var random = SplitMix64(seed: 0)
            order.shuffle(using: &random)
            func indices(_ number: Int) -> [Int] { (0..<batch).map { order[(number * batch + $0) % order.count] } }
            _ = try set.loadBatch(indices(0), augmentationSeed: 0)
            var images = 0
            let start = DispatchTime.now().uptimeNanoseconds
            for number in 1...batches { images += try set.loadBatch(indices(number), augmentationSeed: UInt64(number)).count }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let rate = Double(images) / seconds
            let peak = peakResidentMegabytes()
            if json {
                printLine(JSONValue.object(["images_per_second": .double(rate), "images": .int(images), "threads": .int(threads),
                                            "image_shape": .array([set.channels, set.height, set.width].map(JSONValue.int)),
                                            "peak_rss_mb": .double(peak)]).canonical)
            } else {
                printLine(String(format: "decode + preprocess: %.0f images/s (%d images of %d×%d×%d, %d threads); peak RSS %.0f MB",
                                 rate, images, set.channels, set.height, set.width, threads, peak))
            }
        } catch {
            throw fail(error)
        }
    }
}

/// The process's peak resident set size (VmHWM in /proc/self/status), in MB; 0 where that file does not exist.
func peakResidentMegabytes() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kilobytes = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return 0 }
    return kilobytes / 1024
}
