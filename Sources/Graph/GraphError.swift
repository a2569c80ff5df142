/// A graph that does not make sense: names the node and op at fault and what was expected.
public struct GraphValidationError: Error, CustomStringConvertible, Equatable, Sendable {
    public var nodeName: String?
    public var op: OpType?
    public var message: String

    public init(node: Node?, _ message: String) {
        self.nodeName = node?.name
        self.op = node?.op
        self.message = message
    }

    public var description: String {
        if let nodeName, let op { return "node '\(nodeName)' (\(op.rawValue)): \(message)" }
        return "graph: \(message)"
    }
}
