import XCTest
import Pipeline

final class RunnerTests: XCTestCase {
    let log = ExecutionLog()
    var registry: StageRegistry { TestStages.registry(log: log) }

    static let chain = """
        stages:
          a: {uses: number, with: {value: 1}}
          b: {uses: number, with: {value: 2}}
          total: {uses: sum, needs: [a, b], with: {add: 0.5}, outputs: {value: results/total.txt}}
          twice: {uses: sum, needs: total, with: {mode: double}}
        """

    func testSecondRunDoesNoWorkAndRestoresOutputs() throws {
        let project = try TemporaryProject()
        let first = try project.run(Self.chain, registry: registry)
        XCTAssertEqual(first.stages.map(\.outcome), [.ran, .ran, .ran, .ran])
        XCTAssertEqual(first.stages.last?.metrics["sum"], .double(7))
        let output = project.directory.appendingPathComponent("results/total.txt")
        XCTAssertEqual(try String(contentsOf: output, encoding: .utf8), "3.5")
        try FileManager.default.removeItem(at: output)

        log.reset()
        let second = try project.run(Self.chain, registry: registry)
        XCTAssertEqual(second.stages.map(\.outcome), [.cached, .cached, .cached, .cached])
        XCTAssertEqual(log.names, [], "no stage work on an unchanged pipeline")
        XCTAssertEqual(second.stages.last?.metrics["sum"]?.doubleValue, 7, "metrics come back from the record")
        XCTAssertEqual(try String(contentsOf: output, encoding: .utf8), "3.5", "outputs are restored from the cache")
    }

    /// issue #21: where results were computed is recorded per stage (a cached stage keeps the machine of its cache
    /// record) and per run, and the report says it.
    func testRunsAndStagesRecordTheMachineThatComputedThem() throws {
        let project = try TemporaryProject()
        let first = try project.run(Self.chain, registry: registry)
        XCTAssertEqual(first.machine, .current)
        XCTAssertEqual(first.stages.map(\.machine), Array(repeating: .current, count: 4))
        XCTAssertFalse(MachineRecord.current.cpu.isEmpty)
        XCTAssertTrue(["portable", "avx2", "avx512vnni"].contains(MachineRecord.current.int8Kernels), MachineRecord.current.int8Kernels)
        let second = try project.run(Self.chain, registry: registry)
        XCTAssertEqual(second.stages.map(\.outcome), [.cached, .cached, .cached, .cached])
        XCTAssertEqual(second.stages.map(\.machine), Array(repeating: .current, count: 4), "from the cache records")
        let report = try String(contentsOf: RunHistory(store: project.store).directory(ofRun: second.id).appendingPathComponent(RunReport.fileName), encoding: .utf8)
        XCTAssertTrue(report.contains("- machine: \(MachineRecord.current)"), report)
    }

    /// Running targets runs only them and what they need.
    func testTargetsRunOnlyWhatTheyNeed() throws {
        let project = try TemporaryProject()
        let plan = try project.plan(Self.chain, registry: registry).restricted(to: ["total"])
        let record = try Runner(plan: plan, store: project.store, options: RunOptions(jobs: 1, forced: [], quiet: true), print: { _ in }).run()
        XCTAssertEqual(record.stages.map(\.instance), ["a", "b", "total"])
        XCTAssertEqual(Set(log.names), ["a", "b", "total"])
    }

    func testChangingOneParameterRerunsOnlyThatStageAndDependents() throws {
        let project = try TemporaryProject()
        _ = try project.run(Self.chain, registry: registry)
        log.reset()
        let record = try project.run(Self.chain.replacingOccurrences(of: "add: 0.5", with: "add: 1.5"), registry: registry)
        XCTAssertEqual(Set(log.names), ["total", "twice"])
        XCTAssertEqual(record.stages.map(\.outcome), [.cached, .cached, .ran, .ran])
    }

    func testSameOutputUpstreamDoesNotRerunDownstream() throws {
        // 'label' changes a's key but not its output, so 'total' keeps its key (keys use input digests).
        let project = try TemporaryProject()
        _ = try project.run(Self.chain, registry: registry)
        log.reset()
        let edited = Self.chain.replacingOccurrences(of: "a: {uses: number, with: {value: 1}}", with: "a: {uses: number, with: {value: 1, label: renamed}}")
        let record = try project.run(edited, registry: registry)
        XCTAssertEqual(log.names, ["a"])
        XCTAssertEqual(record.stages.map(\.outcome), [.ran, .cached, .cached, .cached])
    }

    func testSetOverrideChangesKey() throws {
        let project = try TemporaryProject()
        _ = try project.run(Self.chain, registry: registry)
        log.reset()
        _ = try project.run(Self.chain, registry: registry, overrides: ["b.value=3"])
        XCTAssertEqual(Set(log.names), ["b", "total", "twice"])
    }

    func testForceRerunsCachedStage() throws {
        let project = try TemporaryProject()
        _ = try project.run(Self.chain, registry: registry)
        log.reset()
        let record = try project.run(Self.chain, registry: registry, forced: ["total"])
        XCTAssertEqual(log.names, ["total"], "same output, so 'twice' stays cached")
        XCTAssertEqual(record.stages.map(\.outcome), [.cached, .cached, .ran, .cached])
    }

    func testFailureStopsDependentsButIndependentBranchesFinish() throws {
        let project = try TemporaryProject()
        let manifest = """
            stages:
              good: {uses: number, with: {value: 1}}
              bad: {uses: fail, needs: good}
              after-bad: {uses: sum, needs: bad}
              other: {uses: sum, needs: good}
            """
        do {
            _ = try project.run(manifest, registry: registry, jobs: 2)
            XCTFail("expected the run to fail")
        } catch let failure as RunFailure {
            let outcomes = Dictionary(uniqueKeysWithValues: failure.record.stages.map { ($0.instance, $0.outcome) })
            XCTAssertEqual(outcomes, ["good": .ran, "bad": .failed, "after-bad": .skipped, "other": .ran])
            XCTAssertTrue(failure.description.contains("stage 'bad' failed: deliberate failure in bad"), failure.description)
            XCTAssertTrue(failure.record.stages.first { $0.instance == "after-bad" }?.error?.contains("'bad' failed") == true)
        }
        // Nothing of the failed stage was kept: no record, no partial object, scratch space cleared.
        let store = project.store
        XCTAssertEqual(store.allRecords().count, 2)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: store.temporaryDirectory.path)
        XCTAssertEqual(leftovers, [])
        // A run record was still written, and says it failed.
        let history = RunHistory(store: store).recentRuns(limit: 5)
        XCTAssertEqual(history.first?.succeeded, false)
    }

    func testIndependentStagesRunInParallel() throws {
        let manifest = """
            stages:
              left: {uses: meet, with: {value: 1}}
              right: {uses: meet, with: {value: 2}}
              join: {uses: sum, needs: [left, right]}
            """
        let parallel = try TemporaryProject()
        let record = try parallel.run(manifest, registry: TestStages.registry(log: log, rendezvous: Rendezvous(parties: 2)), jobs: 2)
        XCTAssertEqual(record.stages.first { $0.instance == "join" }?.metrics["sum"]?.doubleValue, 3)

        // With one job, the two stages never overlap, so neither meets the other.
        let serial = try TemporaryProject()
        XCTAssertThrowsError(try serial.run(manifest, registry: TestStages.registry(log: log, rendezvous: Rendezvous(parties: 2)), jobs: 1))
    }

    func testLeftoversOfAKilledRunAreClearedAndFinishedStagesKept() throws {
        let project = try TemporaryProject()
        _ = try project.run(Self.chain, registry: registry)
        // What a kill -9 during a stage leaves: a scratch directory with a half-written file, and no record. Its
        // owner (a process that has exited) is gone; a live run's scratch folder (this process's) must stay.
        let store = project.store
        let exited = Process()
        exited.executableURL = URL(fileURLWithPath: "/bin/true")
        try exited.run()
        exited.waitUntilExit()
        let host = HolderFile.identity.host
        let scratch = store.temporaryDirectory.appendingPathComponent("\(host)~\(exited.processIdentifier)~twice-dead")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        try Data("half".utf8).write(to: scratch.appendingPathComponent("model.qf"))
        let live = store.temporaryDirectory.appendingPathComponent("\(host)~\(HolderFile.identity.pid)~other-run")
        try FileManager.default.createDirectory(at: live, withIntermediateDirectories: true)
        let twiceKey = try XCTUnwrap(RunHistory(store: store).recentRuns(limit: 1).first?.stages.last?.key)
        try FileManager.default.removeItem(at: store.recordsDirectory.appendingPathComponent("\(twiceKey).json"))

        log.reset()
        let record = try project.run(Self.chain, registry: registry)
        XCTAssertEqual(log.names, ["twice"])
        XCTAssertEqual(record.stages.map(\.outcome), [.cached, .cached, .cached, .ran])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: store.temporaryDirectory.path), [live.lastPathComponent])
    }

    func testEveryObjectMatchesItsDigest() throws {
        let project = try TemporaryProject()
        let record = try project.run(Self.chain, registry: registry)
        for stage in record.stages {
            for reference in stage.outputs.values {
                XCTAssertEqual(try Digest.ofFile(at: project.store.objectURL(reference.digest)), reference.digest)
            }
        }
    }

    /// Two runs on one cache at once: the second waits for the stage key the first is computing (not for the
    /// whole run), then restores it; each stage is computed once.
    func testConcurrentRunsComputeASharedStageOnce() throws {
        let project = try TemporaryProject()
        let gate = DispatchSemaphore(value: 0)
        let registry = TestStages.registry(log: log, gate: gate)
        let manifest = "stages:\n  slow: {uses: gate}\n  after: {uses: sum, needs: slow}\n"
        let plan = try project.plan(manifest, registry: registry)
        let store = project.store
        let firstDone = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? Runner(plan: plan, store: store, options: RunOptions(quiet: true), print: { _ in }).run()
            firstDone.signal()
        }
        // Wait until the first run is inside its stage.
        let deadline = Date().addingTimeInterval(10)
        while !log.names.contains("slow") && Date() < deadline { usleep(10_000) }
        XCTAssertEqual(log.names, ["slow"])

        let messages = ExecutionLog()
        let secondDone = DispatchSemaphore(value: 0)
        let second = RecordBox()
        DispatchQueue.global().async {
            second.value = try? Runner(plan: plan, store: store, options: RunOptions(quiet: false), print: { messages.record($0) }).run()
            secondDone.signal()
        }
        let waitDeadline = Date().addingTimeInterval(10)
        while !messages.names.contains(where: { $0.contains("slow: waiting for") }) && Date() < waitDeadline { usleep(10_000) }
        XCTAssertTrue(messages.names.contains { $0.contains("slow: waiting for") && $0.contains("which is computing key") }, "\(messages.names)")
        gate.signal()
        XCTAssertEqual(firstDone.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(secondDone.wait(timeout: .now() + 20), .success)
        XCTAssertEqual(second.value?.stages.map(\.outcome), [.cached, .cached], "the second run found the first run's results")
        XCTAssertEqual(log.names, ["slow", "after"])
    }

    func testGarbageCollectionKeepsReferencedObjects() throws {
        let project = try TemporaryProject()
        _ = try project.run(Self.chain, registry: registry)
        let orphan = project.store.objectURL(String(repeating: "ab", count: 32))
        try FileManager.default.createDirectory(at: orphan.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data("orphan".utf8).write(to: orphan)
        let result = try GarbageCollector(store: project.store).collect()
        XCTAssertEqual(result.removedObjects, 1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: orphan.path))
        log.reset()
        _ = try project.run(Self.chain, registry: registry)
        XCTAssertEqual(log.names, [], "gc removed nothing a record needs")

        // While a run uses the cache, gc refuses (its stored objects may not have a record yet).
        let marker = try project.store.markActiveRun()
        XCTAssertThrowsError(try GarbageCollector(store: project.store).collect()) { error in
            XCTAssertTrue("\(error)".contains("the cache is in use by 1 run"), "\(error)")
        }
        marker.release()
        XCTAssertNoThrow(try GarbageCollector(store: project.store).collect())
    }

    func testMatrixRunSharesUpstreamAndTableShowsSweptParameters() throws {
        let project = try TemporaryProject()
        let record = try project.run("""
            matrix: {x: [1, 2, 3]}
            stages:
              base: {uses: number, with: {value: 10}}
              add: {uses: sum, needs: base, with: {add: "${matrix.x}"}, outputs: {value: "out/add-${matrix.x}.txt"}}
            """, registry: registry, jobs: 2)
        XCTAssertEqual(log.names.filter { $0 == "base" }.count, 1)
        XCTAssertEqual(record.stages.count, 4)
        XCTAssertEqual(try String(contentsOf: project.directory.appendingPathComponent("out/add-2.txt"), encoding: .utf8), "12.0")
        let table = RunHistory.table([record])
        XCTAssertTrue(table.contains("add[x=3]"), table)
        XCTAssertTrue(table.split(separator: "\n")[0].contains("add"), "the swept parameter is a column: \(table)")
        XCTAssertTrue(table.contains("13"), table)
    }

    func testPlanPreviewShowsCachedAndPending() throws {
        let project = try TemporaryProject()
        let plan = try project.plan(Self.chain, registry: registry)
        let before = try PlanPreview(plan: plan, store: project.store).statuses()
        XCTAssertEqual(before.filter { if case .willRun = $0.status { return true }; return false }.count, 2)
        XCTAssertEqual(before.filter { if case .pending = $0.status { return true }; return false }.count, 2)
        _ = try project.run(Self.chain, registry: registry)
        let edited = try project.plan(Self.chain.replacingOccurrences(of: "mode: double", with: "mode: plain"), registry: registry)
        let after = try PlanPreview(plan: edited, store: project.store).statuses()
        XCTAssertEqual(after.map { if case .cached = $0.status { return "cached" }; return "run" }, ["cached", "cached", "cached", "run"])
        XCTAssertEqual(log.names.count, 4, "plan does no work")
    }
}

/// Hands a run record from a worker thread to the test (read after the worker signalled).
final class RecordBox: @unchecked Sendable {
    var value: RunRecord?
}
