/// A model file that cannot be read or written: names the file, the byte offset where the problem is (when one
/// applies) and what was expected there.
public struct ModelFileError: Error, CustomStringConvertible, Equatable, Sendable {
    public var file: String
    public var byteOffset: Int?
    public var message: String

    public init(file: String, byteOffset: Int?, _ message: String) {
        self.file = file
        self.byteOffset = byteOffset
        self.message = message
    }

    public var description: String {
        if let byteOffset { return "\(file): at byte \(byteOffset): \(message)" }
        return "\(file): \(message)"
    }
}

/// A problem inside a model file found by code that does not know the file's name; `ModelFile` reports it as a
/// `ModelFileError`. Without a byte offset the problem is in the graph JSON, which starts at byte 8.
struct FormatProblem: Error {
    var byteOffset: Int?
    var message: String

    init(_ message: String, byteOffset: Int? = nil) {
        self.message = message
        self.byteOffset = byteOffset
    }
}
