import Foundation
import Datasets

/// Computes stage keys: SHA-256 over the canonical JSON of (stage kind and its version, parameters, input
/// artifact digests). A kind's version changes when its code changes what it writes (`StageKind.version`; the
/// golden-digest test fails until it does), so a new binary never reuses a stale entry of that kind only. Parameters that name project files enter by their content digest, and dataset parameters
/// by their full spec, so the key changes when what the stage reads changes — not when a path is spelled
/// differently or a stage is renamed.
final class StageKeyBuilder: @unchecked Sendable {
    private let plan: Plan
    private let lock = NSLock()
    private var fileDigests: [String: String] = [:]

    init(plan: Plan) { self.plan = plan }

    func key(for instance: StageInstance, inputs: [[String: String]]) throws -> String {
        var parameters: [String: JSONValue] = [:]
        for spec in instance.kind.parameters {
            guard let value = instance.parameters[spec.name] else { continue }
            // An optional file or dataset left unset (null) names nothing to digest.
            if value == .null { parameters[spec.name] = .null; continue }
            switch spec.type {
            case .inputFile:
                parameters[spec.name] = .object(["sha256": .string(try fileDigest(value.stringValue ?? ""))])
            case .dataset:
                parameters[spec.name] = try datasetValue(value.stringValue ?? "")
            default:
                parameters[spec.name] = value
            }
        }
        let material: JSONValue = .object([
            "kind": .string(instance.kind.name),
            "version": .int(instance.kind.version),
            "parameters": .object(parameters),
            "inputs": .array(inputs.map { .object($0.mapValues(JSONValue.string)) }),
        ])
        return Digest.of(material.canonical)
    }

    private func fileDigest(_ path: String) throws -> String {
        let url = path.hasPrefix("/") ? URL(fileURLWithPath: path) : plan.projectDirectory.appendingPathComponent(path)
        lock.lock()
        if let known = fileDigests[url.path] { lock.unlock(); return known }
        lock.unlock()
        let digest = try Digest.ofFile(at: url)
        lock.lock(); fileDigests[url.path] = digest; lock.unlock()
        return digest
    }

    private func datasetValue(_ reference: String) throws -> JSONValue {
        let spec = try plan.datasets[reference] ?? DatasetSpec(shorthand: reference)
        return try Self.datasetValue(spec, projectDirectory: plan.projectDirectory)
    }

    /// A dataset as key material: its spec, and for image files a digest of every file's path, size and
    /// modification time (as DVC checks a folder), so adding, removing, replacing or touching an image re-runs what
    /// read the set and nothing else. (The IDX datasets are fixed files, verified by `make datasets`.)
    static func datasetValue(_ spec: DatasetSpec, projectDirectory: URL) throws -> JSONValue {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        var value = try JSONDecoder().decode(JSONValue.self, from: encoder.encode(spec))
        guard spec.isImageSource, case .object(var object) = value else { return value }
        var lines: [String] = []
        for file in try DatasetLoader.files(of: spec, projectDirectory: projectDirectory) {
            let attributes = (try? FileManager.default.attributesOfItem(atPath: file.path)) ?? [:]
            let size = (attributes[.size] as? Int) ?? -1
            let modified = (attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0
            lines.append("\(file.path)\t\(size)\t\(modified)")
        }
        object["files"] = .object(["count": .int(lines.count), "sha256": .string(Digest.of(lines.joined(separator: "\n")))])
        value = .object(object)
        return value
    }
}
