import Foundation

/// What `qatflow plan` prints: every instance in run order with its key and whether it is cached. A key
/// depends on upstream output digests, so it is known only when every upstream instance is cached;
/// otherwise it is shown as pending.
public struct PlanPreview {
    public let plan: Plan
    public let store: ArtifactStore

    public init(plan: Plan, store: ArtifactStore) {
        self.plan = plan
        self.store = store
    }

    public enum Status: Equatable {
        case cached(key: String)
        case willRun(key: String)
        case pending(after: String)
    }

    public func statuses() throws -> [(instance: StageInstance, status: Status)] {
        let keys = StageKeyBuilder(plan: plan)
        var outputs: [String: [String: String]] = [:]
        var result: [(StageInstance, Status)] = []
        for instance in plan.instances {
            if let missing = instance.needs.first(where: { outputs[$0] == nil }) {
                result.append((instance, .pending(after: missing)))
                continue
            }
            let key = try keys.key(for: instance, inputs: instance.needs.map { outputs[$0]! })
            if let record = store.usableRecord(forKey: key) {
                outputs[instance.name] = record.outputs.mapValues(\.digest)
                result.append((instance, .cached(key: key)))
            } else {
                result.append((instance, .willRun(key: key)))
            }
        }
        return result
    }

    public func lines() throws -> [String] {
        let statuses = try statuses()
        let width = max(8, statuses.map(\.instance.name.count).max() ?? 0)
        let cached = statuses.filter { if case .cached = $0.status { return true }; return false }.count
        var lines = ["plan for \(plan.manifest.file): \(statuses.count) stage instances, \(cached) cached, \(statuses.count - cached) to run"]
        for (index, entry) in statuses.enumerated() {
            let name = entry.instance.name.padding(toLength: width, withPad: " ", startingAt: 0)
            let needs = entry.instance.needs.isEmpty ? "" : "  needs " + entry.instance.needs.joined(separator: ", ")
            let number = String(index + 1).leftPadded(to: String(statuses.count).count)
            switch entry.status {
            case .cached(let key): lines.append("\(number)  \(name)  cached   \(key.prefix(10))  \(entry.instance.kind.name)\(needs)")
            case .willRun(let key): lines.append("\(number)  \(name)  run      \(key.prefix(10))  \(entry.instance.kind.name)\(needs)")
            case .pending: lines.append("\(number)  \(name)  run      (pending)   \(entry.instance.kind.name)\(needs)")
            }
        }
        return lines
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
