/// The stage kinds a plan may use, by name. Production code uses `StageRegistry.production`;
/// tests build registries with test-only kinds.
public struct StageRegistry: Sendable {
    private var kinds: [String: StageKind] = [:]

    public init(_ kinds: [StageKind] = []) {
        for kind in kinds { register(kind) }
    }

    public mutating func register(_ kind: StageKind) {
        precondition(kinds[kind.name] == nil, "stage kind '\(kind.name)' registered twice")
        kinds[kind.name] = kind
    }

    public func kind(named name: String) -> StageKind? { kinds[name] }
    public var names: [String] { kinds.keys.sorted() }
    public var all: [StageKind] { names.map { kinds[$0]! } }
}
