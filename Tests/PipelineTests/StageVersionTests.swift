import Foundation
import Pipeline
import XCTest

/// Keys see code changes only through each stage kind's `version` (issue #21, item 5). This test runs a small
/// deterministic pipeline with every production kind and compares what each kind wrote with
/// `Golden/stage-digests.json`: an output that changed while its kind's version did not fails here, so a stale cache
/// entry can never be reused for it.
///
/// Float kernels run on their portable path (`QATFLOW_FP32_ISA=portable`), the same instructions on every x86 CPU;
/// the int8 engine is exact integer arithmetic on every path. So the digests hold on AVX2 and AVX-512 machines alike.
/// After an intended change: bump the kind's `version:` and rerun with `QATFLOW_UPDATE_GOLDEN=1` to rewrite the file.
final class StageVersionTests: XCTestCase {
    static let golden = CLITests.repository.appendingPathComponent("Tests/PipelineTests/Golden/stage-digests.json")

    static let manifest = """
        datasets:
          train-64: {source: fashion-mnist, split: train, limit: 64}
          test-100: {source: fashion-mnist, split: test, limit: 100}
        stages:
          convert: {uses: convert, with: {model: models/mobilenetv2-fmnist-pytorch.onnx, for_training: true}}
          quantize: {uses: quantize, needs: convert, with: {bits: 8, images: 64, method: mse, dataset: train-64}}
          qat: {uses: qat, needs: convert, with: {bits: 8, steps: 2, batch: 16, init_images: 32, dataset: train-64}}
          train: {uses: train, with: {builder: mobilenetv2-fmnist, width: 0.25, steps: 2, batch: 16, dataset: train-64}}
          evaluate: {uses: evaluate, needs: [quantize, qat, train], with: {dataset: test-100, latency_repeats: 0}}
          export: {uses: export, needs: qat}
        """

    /// Artifacts whose bytes depend on the machine by design (the model card names the CPU) are not compared.
    static let machineDependent: Set<String> = ["export/model-card"]

    /// What each stage of the manifest reads from the others (its outputs can only be compared when these match).
    static let needs = ["convert": [], "quantize": ["convert"], "qat": ["convert"], "train": [],
                        "evaluate": ["quantize", "qat", "train"], "export": ["qat"]]

    struct Entry: Codable, Equatable {
        var version: Int
        /// The digests of everything it read from upstream stages (`artifact@stage`).
        var inputs: [String: String]
        var digests: [String: String]
    }

    func testEveryKindsOutputIsPinnedToItsVersion() throws {
        let project = try TemporaryProject()
        try FileManager.default.createSymbolicLink(at: project.directory.appendingPathComponent("models"),
                                                   withDestinationURL: CLITests.repository.appendingPathComponent("models"))
        try project.write(Self.manifest)
        setenv("QATFLOW_FP32_ISA", "portable", 1)
        defer { unsetenv("QATFLOW_FP32_ISA") }
        let run = try runQatflow(["run", "pipeline.yaml", "--quiet"], in: project.directory)
        XCTAssertEqual(run.status, 0, run.stdout + run.stderr)
        let record = try XCTUnwrap(RunHistory(store: project.store).recentRuns(limit: 1).first)
        var measured: [String: Entry] = [:]
        let outputs = Dictionary(uniqueKeysWithValues: record.stages.map { ($0.instance, $0.outputs) })
        for stage in record.stages {
            let kind = try XCTUnwrap(StageRegistry.production.kind(named: stage.kind))
            var digests: [String: String] = [:]
            for (artifact, reference) in stage.outputs where !Self.machineDependent.contains("\(stage.kind)/\(artifact)") {
                digests[artifact] = reference.digest
            }
            var inputs: [String: String] = [:]
            for need in Self.needs[stage.instance] ?? [] {
                for (artifact, reference) in outputs[need] ?? [:] where !Self.machineDependent.contains("\(need)/\(artifact)") {
                    inputs["\(artifact)@\(need)"] = reference.digest
                }
            }
            measured[stage.kind] = Entry(version: kind.version, inputs: inputs, digests: digests)
        }
        XCTAssertEqual(Set(measured.keys), Set(StageRegistry.production.names), "every production kind is in the pipeline")

        if ProcessInfo.processInfo.environment["QATFLOW_UPDATE_GOLDEN"] == "1" {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try FileManager.default.createDirectory(at: Self.golden.deletingLastPathComponent(), withIntermediateDirectories: true)
            try encoder.encode(measured).write(to: Self.golden)
            print("rewrote \(Self.golden.path)")
            return
        }
        let golden = try JSONDecoder().decode([String: Entry].self, from: Data(contentsOf: Self.golden))
        for (kind, entry) in measured.sorted(by: { $0.key < $1.key }) {
            guard let pinned = golden[kind] else { XCTFail("\(kind): no golden entry; rerun with QATFLOW_UPDATE_GOLDEN=1"); continue }
            if entry.version == pinned.version && entry.inputs != pinned.inputs {
                XCTFail("stage kind '\(kind)' read different inputs than the golden run (an upstream kind's output changed, and that kind's version with it): rerun with QATFLOW_UPDATE_GOLDEN=1 to record what '\(kind)' writes from them")
            } else if entry.version == pinned.version {
                XCTAssertEqual(entry.digests, pinned.digests, """
                    stage kind '\(kind)' writes different outputs at the same version \(entry.version): a cache made by \
                    the previous binary would be reused for it. If the change is intended, bump its version (StageKind \
                    `version:`) and rerun this test with QATFLOW_UPDATE_GOLDEN=1.
                    """)
            } else {
                XCTFail("stage kind '\(kind)' is at version \(entry.version), the golden file at \(pinned.version): rerun with QATFLOW_UPDATE_GOLDEN=1 to record what the new version writes")
            }
        }
    }
}
