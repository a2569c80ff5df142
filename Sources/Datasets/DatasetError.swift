import Foundation

/// Everything that can go wrong while naming, finding or decoding a dataset or an NPY file.
///
/// Every case carries enough context for the message alone to explain the problem: which file, at which byte
/// (offsets into the *decompressed* stream for gzipped files, because that is where the format is defined),
/// and what was expected there.
public enum DatasetError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A dataset name that is not in `DatasetSpec.knownNames`.
    case unknownDataset(name: String, knownNames: [String])
    /// A `NAME:SPLIT` reference that does not have that form.
    case invalidShorthand(text: String, reason: String)
    /// A `DatasetSpec` field outside its valid range (negative padding, zero std, ...).
    case invalidSpec(reason: String)
    /// Some of the dataset's files are in none of the searched directories.
    case filesNotFound(dataset: String, missingFiles: [String], searchedDirectories: [String])
    /// A file exists but could not be read at all.
    case unreadableFile(path: String, reason: String)
    /// A file could not be written (missing directory, permissions, full disk).
    case unwritableFile(path: String, reason: String)
    /// A file's content is not what its format requires at `byteOffset`.
    case malformedFile(path: String, byteOffset: Int, problem: String)
    /// A caller asked for something the data cannot provide (wrong value count for an NPY shape, ...).
    case invalidArgument(reason: String)
    /// An image file that cannot be decoded or does not fit the declared preprocessing.
    case badImage(path: String, problem: String)
    /// A folder or list of images that cannot be used (missing, empty, a bad line).
    case badImageSet(path: String, problem: String)

    public var description: String {
        switch self {
        case let .unknownDataset(name, knownNames):
            return "unknown dataset '\(name)'; known datasets: \(knownNames.joined(separator: ", "))"
        case let .invalidShorthand(text, reason):
            return "invalid dataset reference '\(text)': \(reason)"
        case let .invalidSpec(reason):
            return "invalid dataset spec: \(reason)"
        case let .filesNotFound(dataset, missingFiles, searchedDirectories):
            let searched = searchedDirectories.map { "  - \($0)" }.joined(separator: "\n")
            return """
                dataset '\(dataset)' not found: missing \(missingFiles.joined(separator: ", ")) \
                (each may also be gzipped as .gz). Directories searched, in order:
                \(searched)
                Fix: \(dataset.hasPrefix("cifar10") ? "put the official binary batches (cifar-10-batches-bin) in datasets/cifar10/, or point the dataset's root at the folder holding them" : "run 'make datasets' (or point the spec's root at a directory holding the four IDX files)").
                """
        case let .unreadableFile(path, reason):
            return "\(path): cannot read file: \(reason)"
        case let .unwritableFile(path, reason):
            return "\(path): cannot write file: \(reason)"
        case let .malformedFile(path, byteOffset, problem):
            return "\(path): at byte \(byteOffset): \(problem)"
        case let .invalidArgument(reason):
            return reason
        case let .badImage(path, problem):
            return "\(path): \(problem)"
        case let .badImageSet(path, problem):
            return "\(path): \(problem)"
        }
    }
}
