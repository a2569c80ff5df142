import Foundation
import Pipeline
import XCTest

/// Issue #21 on a real Slurm cluster: the one-node cluster `scripts/slurm-localhost.sh` starts on this machine
/// (`.ci/run` starts it in CI). The quickstart pipeline with a two-value matrix, run as Slurm jobs, computes what the
/// local executor computes (same keys, same metrics); a failing job skips its dependents and names its log.
final class SlurmExecutorTests: XCTestCase {
    /// Starts (or finds) the cluster. Without Slurm, or without root to start it, the test is skipped with the
    /// reason, except in CI, where Slurm must run.
    func requireSlurm() throws {
        let script = CLITests.repository.appendingPathComponent("scripts/slurm-localhost.sh")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/bash")
        process.arguments = [script.path]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let reason = "Slurm cannot start here: \(text.trimmingCharacters(in: .whitespacesAndNewlines))"
            if ProcessInfo.processInfo.environment["CI"] != nil { XCTFail(reason + " (CI must run this test)"); throw CLITestError(reason) }
            throw XCTSkip(reason)
        }
    }

    /// quickstart.yaml with its QAT shortened and a matrix over PTQ bits, on 300 test images.
    static func manifest() throws -> String {
        var text = try String(contentsOf: CLITests.repository.appendingPathComponent("pipelines/quickstart.yaml"), encoding: .utf8)
        text = text.replacingOccurrences(of: "limit: 1000", with: "limit: 300")
        text = text.replacingOccurrences(of: "      steps: 30\n", with: "      steps: 4\n")
        text = text.replacingOccurrences(of: "      init_images: 300\n", with: "      init_images: 100\n")
        text = text.replacingOccurrences(of: "  quantize:\n    uses: quantize\n    needs: [convert]\n    with:\n      bits: 8\n",
                                         with: "  quantize:\n    uses: quantize\n    needs: [convert]\n    resources: {cpus: 1, mem: 2G, time: 20m}\n    with:\n      bits: ${matrix.bits}\n")
        return text.replacingOccurrences(of: "datasets:\n", with: "matrix:\n  bits: [6, 8]\n\ndatasets:\n")
    }

    func project() throws -> TemporaryProject {
        let project = try TemporaryProject()
        try FileManager.default.createSymbolicLink(at: project.directory.appendingPathComponent("models"),
                                                   withDestinationURL: CLITests.repository.appendingPathComponent("models"))
        try project.write(try Self.manifest())
        return project
    }

    func testQuickstartMatrixThroughSlurmEqualsTheLocalExecutor() throws {
        try requireSlurm()
        let slurmProject = try project(), localProject = try project()
        let started = Date()
        let slurm = try runQatflow(["run", "pipeline.yaml", "--executor", "slurm", "--slurm-arg=--nice=0"], in: slurmProject.directory)
        print("qatflow run --executor slurm (\(String(format: "%.0f", Date().timeIntervalSince(started))) s):\n\(slurm.stdout)\(slurm.stderr)")
        XCTAssertEqual(slurm.status, 0, slurm.stdout + slurm.stderr)
        XCTAssertTrue(slurm.stdout.contains("submitted quantize[bits=6] as Slurm job"), slurm.stdout)
        XCTAssertTrue(slurm.stdout.contains("(after "), "dependencies become afterok: \(slurm.stdout)")
        let local = try runQatflow(["run", "pipeline.yaml", "--jobs", "2", "--quiet"], in: localProject.directory)
        XCTAssertEqual(local.status, 0, local.stdout + local.stderr)

        let slurmRun = try XCTUnwrap(RunHistory(store: slurmProject.store).recentRuns(limit: 1).first)
        let localRun = try XCTUnwrap(RunHistory(store: localProject.store).recentRuns(limit: 1).first)
        XCTAssertEqual(slurmRun.executor, "slurm")
        XCTAssertEqual(slurmRun.stages.map(\.instance), localRun.stages.map(\.instance))
        XCTAssertEqual(slurmRun.stages.count, 8, "convert, qat, and quantize, evaluate and export per bits")
        XCTAssertEqual(slurmRun.stages.map(\.outcome), Array(repeating: .ran, count: 8))
        for (viaSlurm, here) in zip(slurmRun.stages, localRun.stages) {
            XCTAssertEqual(viaSlurm.key, here.key, viaSlurm.instance)
            XCTAssertEqual(viaSlurm.outputs.mapValues(\.digest), here.outputs.mapValues(\.digest), "\(viaSlurm.instance): the same files")
            for name in ["top1/convert", "top1/quantize[bits=6]", "top1/quantize[bits=8]", "top1/qat", "agreement/qat"] {
                XCTAssertEqual(viaSlurm.metrics[name], here.metrics[name], "\(viaSlurm.instance) \(name)")
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: slurmProject.directory.appendingPathComponent("build/quickstart/model-card.json").path),
                      "the export job wrote the manifest's outputs into the shared project")
        let status = try runQatflow(["status", slurmRun.id], in: slurmProject.directory)
        XCTAssertTrue(status.stdout.contains("COMPLETED") && status.stdout.contains("quantize[bits=8]"), status.stdout)

        // Re-running resumes from the shared cache: nothing is submitted.
        let again = try runQatflow(["run", "pipeline.yaml", "--executor", "slurm"], in: slurmProject.directory)
        XCTAssertEqual(again.status, 0, again.stderr)
        XCTAssertFalse(again.stdout.contains("submitted"), again.stdout)
        XCTAssertTrue(again.stdout.contains("0 ran, 8 cached"), again.stdout)
    }

    func testAFailedJobSkipsItsDependentsAndNamesItsLog() throws {
        try requireSlurm()
        let project = try TemporaryProject()
        try project.write("""
            stages:
              convert: {uses: convert, with: {model: missing.onnx}}
              quantize: {uses: quantize, needs: convert}
            """)
        try Data("not an onnx file".utf8).write(to: project.directory.appendingPathComponent("missing.onnx"))
        let run = try runQatflow(["run", "pipeline.yaml", "--executor", "slurm"], in: project.directory)
        XCTAssertNotEqual(run.status, 0)
        let record = try XCTUnwrap(RunHistory(store: project.store).recentRuns(limit: 1).first)
        XCTAssertEqual(record.stages.map(\.outcome), [.failed, .skipped])
        let error = try XCTUnwrap(record.stages[0].error)
        XCTAssertTrue(error.contains("missing.onnx") && error.contains("log: ") && error.contains("/logs/0-convert.log"), error)
        XCTAssertEqual(record.stages[1].error, "not run: 'convert' failed")
    }
}
