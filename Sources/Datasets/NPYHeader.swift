/// The three fields of an NPY header dictionary, parsed from its Python-literal text, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
///
/// A real little parser rather than string searching, so key order, quoting style and spacing from any numpy
/// version work, and a malformed header is reported at the byte where it goes wrong.
struct NPYHeader {
    var descr = ""
    var fortranOrder = false
    var shape: [Int] = []

    /// `offset` is where the header text starts in the file, so errors can give absolute byte offsets.
    init(parsing text: String, path: String, offset: Int) throws {
        var scanner = LiteralScanner(bytes: Array(text.utf8), path: path, baseOffset: offset)
        var seen = Set<String>()
        try scanner.expect("{")
        while try !scanner.consume("}") {
            let key = try scanner.readString()
            try scanner.expect(":")
            switch key {
            case "descr":
                guard scanner.peek() == UInt8(ascii: "'") || scanner.peek() == UInt8(ascii: "\"") else {
                    throw scanner.error("unsupported dtype: expected a simple type string like '<f4', "
                        + "found a structured dtype")
                }
                descr = try scanner.readString()
            case "fortran_order":
                fortranOrder = try scanner.readBool()
            case "shape":
                shape = try scanner.readIntTuple()
            default:
                throw scanner.error("unexpected header key '\(key)' (expected descr, fortran_order, shape)")
            }
            seen.insert(key)
            if try !scanner.consume(",") {
                try scanner.expect("}")
                break
            }
        }
        for required in ["descr", "fortran_order", "shape"] where !seen.contains(required) {
            throw DatasetError.malformedFile(path: path, byteOffset: offset,
                                             problem: "expected header key '\(required)', it is missing")
        }
    }
}

/// Character-level reader for the small subset of Python literals NPY headers use.
private struct LiteralScanner {
    let bytes: [UInt8]
    let path: String
    let baseOffset: Int
    var position = 0

    func error(_ problem: String) -> DatasetError {
        .malformedFile(path: path, byteOffset: baseOffset + position, problem: "in NPY header: " + problem)
    }

    mutating func skipSpaces() {
        while position < bytes.count, [0x20, 0x09, 0x0a, 0x0d].contains(bytes[position]) { position += 1 }
    }

    mutating func peek() -> UInt8? {
        skipSpaces()
        return position < bytes.count ? bytes[position] : nil
    }

    /// Consumes `character` if it comes next.
    mutating func consume(_ character: Character) throws -> Bool {
        guard peek() == character.asciiValue else { return false }
        position += 1
        return true
    }

    mutating func expect(_ character: Character) throws {
        guard try consume(character) else {
            let found = peek().map { "'\(Character(UnicodeScalar($0)))'" } ?? "end of header"
            throw error("expected '\(character)', found \(found)")
        }
    }

    mutating func readString() throws -> String {
        guard let quote = peek(), quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") else {
            throw error("expected a quoted string")
        }
        let start = position + 1
        guard let end = bytes[start...].firstIndex(of: quote) else { throw error("unterminated string") }
        position = end + 1
        return String(decoding: bytes[start..<end], as: UTF8.self)
    }

    mutating func readBool() throws -> Bool {
        _ = peek()
        for (word, value) in [("True", true), ("False", false)] where bytes[position...].starts(with: word.utf8) {
            position += word.utf8.count
            return value
        }
        throw error("expected True or False")
    }

    mutating func readIntTuple() throws -> [Int] {
        try expect("(")
        var values: [Int] = []
        while try !consume(")") {
            _ = peek()
            let start = position
            while position < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[position]) {
                position += 1
            }
            guard position > start, let value = Int(String(decoding: bytes[start..<position], as: UTF8.self)) else {
                throw error("expected a non-negative integer dimension")
            }
            if position < bytes.count, bytes[position] == UInt8(ascii: "L") { position += 1 }  // Python 2 long
            values.append(value)
            if try !consume(",") {
                try expect(")")
                break
            }
        }
        return values
    }
}
