import Foundation

/// A place in a manifest: file and 1-based line and column (as libyaml counts them).
public struct SourceLocation: Sendable, Hashable, Codable, CustomStringConvertible {
    public let file: String
    public let line: Int
    public let column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One problem found in a manifest or in a `--set` override.
public struct ManifestDiagnostic: Sendable, CustomStringConvertible {
    /// nil for problems that do not come from the file (a `--set` on the command line).
    public let location: SourceLocation?
    public let message: String

    public init(_ location: SourceLocation?, _ message: String) {
        self.location = location
        self.message = message
    }

    public var description: String {
        if let location { return "\(location): error: \(message)" }
        return "error: \(message)"
    }
}

/// Every problem found in one pass, so the user fixes them all at once.
public struct ManifestError: Error, CustomStringConvertible, LocalizedError {
    public let diagnostics: [ManifestDiagnostic]

    public init(_ diagnostics: [ManifestDiagnostic]) { self.diagnostics = diagnostics }
    public init(_ location: SourceLocation?, _ message: String) { self.diagnostics = [ManifestDiagnostic(location, message)] }

    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
    public var errorDescription: String? { description }
}

/// "did you mean" for misspelled keys, stage kinds and stage ids.
enum Suggestion {
    /// The closest candidate within a small edit distance, formatted as ` (did you mean 'x'?)`, or "".
    static func didYouMean(_ word: String, among candidates: [String]) -> String {
        let scored = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return "" }
        let limit = max(2, word.count / 3)
        return best.1 <= limit ? " (did you mean '\(best.0)'?)" : ""
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = [Int](repeating: 0, count: b.count + 1)
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)
                current[j] = min(previous[j] + 1, current[j - 1] + 1, substitution)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
