import Foundation

/// Every name a graph document mentions (values, nodes, initializers), written once; the document refers to a
/// name by its index. Names are sorted and front-coded, because a QDQ graph's names are long and share most of
/// their characters (`…/Relu_output_0`, `…/Relu_output_0::q`, `…/Relu_output_0::q.scale`, …):
/// - an entry `"text"` is the name `text`;
/// - an entry `[k, "text"]` is the first `k` Unicode scalars of the previous name followed by `text`;
/// - an entry `[k, i]` is the same with `suffixes[i]` as the text (suffixes that recur are written once).
struct NameTable {
    /// One entry of the JSON `names` list.
    struct Entry: Codable, Equatable {
        enum Suffix: Equatable {
            case text(String)
            case pooled(Int)
        }

        var shared: Int
        var suffix: Suffix

        init(shared: Int, suffix: Suffix) {
            self.shared = shared
            self.suffix = suffix
        }

        init(from decoder: Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                self.init(shared: 0, suffix: .text(text))
                return
            }
            var container = try decoder.unkeyedContainer()
            let shared = try container.decode(Int.self)
            let suffix: Suffix
            switch try container.decode(TextOrIndex.self) {
            case .text(let text): suffix = .text(text)
            case .index(let index): suffix = .pooled(index)
            }
            try container.expectEnd("[shared, suffix]")
            self.init(shared: shared, suffix: suffix)
        }

        func encode(to encoder: Encoder) throws {
            if shared == 0, case .text(let text) = suffix {
                var container = encoder.singleValueContainer()
                try container.encode(text)
                return
            }
            var container = encoder.unkeyedContainer()
            try container.encode(shared)
            switch suffix {
            case .text(let text): try container.encode(text)
            case .pooled(let index): try container.encode(index)
            }
        }
    }

    /// The names in index order (sorted).
    let names: [String]
    private let indices: [String: Int]

    init(_ strings: some Sequence<String>) {
        names = Array(Set(strings)).sorted()
        indices = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
    }

    /// The index of a name given to `init`.
    func index(of name: String) -> Int {
        guard let index = indices[name] else { preconditionFailure("name '\(name)' is not in the table") }
        return index
    }

    /// A suffix is pooled when at least this many entries end with it.
    static let pooledSuffixMinimumUses = 2

    /// The JSON `names` and `suffixes` lists.
    func encoded() -> (entries: [Entry], suffixes: [String]) {
        var coded: [(shared: Int, text: String)] = []
        var previous: [Unicode.Scalar] = []
        for name in names {
            let scalars = Array(name.unicodeScalars)
            var shared = 0
            while shared < min(scalars.count, previous.count) && scalars[shared] == previous[shared] { shared += 1 }
            var text = String.UnicodeScalarView()
            text.append(contentsOf: scalars[shared...])
            coded.append((shared, String(text)))
            previous = scalars
        }
        var uses: [String: Int] = [:]
        for entry in coded where entry.shared > 0 && entry.text.unicodeScalars.count >= 2 { uses[entry.text, default: 0] += 1 }
        // Most used first, so that the commonest suffixes get one-digit indices; ties by text for determinism.
        let suffixes = uses.filter { $0.value >= Self.pooledSuffixMinimumUses }
            .sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map(\.key)
        let pool = Dictionary(uniqueKeysWithValues: suffixes.enumerated().map { ($1, $0) })
        let entries = coded.map { entry in
            Entry(shared: entry.shared, suffix: entry.shared > 0 ? pool[entry.text].map(Entry.Suffix.pooled) ?? .text(entry.text) : .text(entry.text))
        }
        return (entries, suffixes)
    }

    /// The names a `names`/`suffixes` pair spells; throws a message naming the bad entry.
    static func decode(entries: [Entry], suffixes: [String]) throws -> [String] {
        var names: [String] = []
        names.reserveCapacity(entries.count)
        var previous: [Unicode.Scalar] = []
        for (position, entry) in entries.enumerated() {
            guard entry.shared >= 0, entry.shared <= previous.count else {
                throw FormatProblem("names[\(position)]: shares \(entry.shared) characters with the previous name, which has \(previous.count)")
            }
            let text: String
            switch entry.suffix {
            case .text(let literal): text = literal
            case .pooled(let index):
                guard suffixes.indices.contains(index) else {
                    throw FormatProblem("names[\(position)]: suffix index \(index) is out of range (\(suffixes.count) suffixes)")
                }
                text = suffixes[index]
            }
            let scalars = previous[..<entry.shared] + Array(text.unicodeScalars)
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars)
            names.append(String(view))
            previous = Array(scalars)
        }
        return names
    }
}

/// A JSON string or integer (one element of a mixed array).
enum TextOrIndex: Decodable {
    case text(String)
    case index(Int)

    init(from decoder: Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let index = try? container.decode(Int.self) {
            self = .index(index)
        } else {
            self = .text(try container.decode(String.self))
        }
    }
}

extension UnkeyedDecodingContainer {
    /// Rejects extra elements in a fixed-length array.
    func expectEnd(_ layout: String) throws {
        guard isAtEnd else {
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "expected \(layout), found more elements"))
        }
    }
}
