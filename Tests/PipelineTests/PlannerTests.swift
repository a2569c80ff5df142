import XCTest
import Pipeline

final class PlannerTests: XCTestCase {
    let log = ExecutionLog()
    var registry: StageRegistry { TestStages.registry(log: log) }

    static let sweep = """
        name: sweep
        matrix:
          bits: [8, 4, 2]
          lr: [0.001, 0.01]
        stages:
          base: {uses: number, with: {value: 1}}
          calib: {uses: sum, needs: base, with: {add: 10}}
          qat:
            uses: sum
            needs: calib
            with: {add: "${matrix.bits}", mode: plain}
          tune:
            uses: sum
            needs: qat
            with: {add: "${matrix.lr}"}
          report: {uses: sum, needs: tune}
        """

    func testMatrixExpandsOnlyDependentStages() throws {
        let plan = try TemporaryProject().plan(Self.sweep, registry: registry)
        let names = plan.instances.map(\.name)
        XCTAssertEqual(names.filter { $0.hasPrefix("base") }, ["base"])
        XCTAssertEqual(names.filter { $0.hasPrefix("calib") }, ["calib"])
        XCTAssertEqual(names.filter { $0.hasPrefix("qat") }, ["qat[bits=8]", "qat[bits=4]", "qat[bits=2]"])
        XCTAssertEqual(names.filter { $0.hasPrefix("tune") }.count, 6)
        XCTAssertTrue(names.contains("tune[bits=4,lr=0.01]"))
        XCTAssertEqual(names.filter { $0.hasPrefix("report") }.count, 6, "a stage downstream of a swept stage is swept too")
        XCTAssertEqual(plan.instance(named: "tune[bits=4,lr=0.01]")?.needs, ["qat[bits=4]"])
        XCTAssertEqual(plan.instance(named: "qat[bits=2]")?.parameters["add"], .double(2), "a whole-value reference keeps the matrix value's type")
    }

    func testThreeByTwoSweepOfOneStage() throws {
        let plan = try TemporaryProject().plan("""
            matrix: {bits: [8, 4, 2], lr: [0.001, 0.01]}
            stages:
              convert: {uses: number, with: {value: 1}}
              calib: {uses: sum, needs: convert}
              qat: {uses: sum, needs: calib, with: {add: "${matrix.bits}", mode: plain}}
              label: {uses: number, with: {value: "${matrix.lr}"}}
            """, registry: registry)
        let swept = plan.instances.filter { $0.stageID == "qat" || $0.stageID == "label" }
        XCTAssertEqual(plan.instances.filter { $0.stageID == "convert" }.count, 1)
        XCTAssertEqual(plan.instances.filter { $0.stageID == "calib" }.count, 1)
        XCTAssertEqual(swept.count, 5)
    }

    func testOrderRespectsNeeds() throws {
        let plan = try TemporaryProject().plan(Self.sweep, registry: registry)
        var seen = Set<String>()
        for instance in plan.instances {
            XCTAssertTrue(instance.needs.allSatisfy(seen.contains), "\(instance.name) before its needs")
            seen.insert(instance.name)
        }
    }

    func testSetOverridesApplyBeforeExpansion() throws {
        let plan = try TemporaryProject().plan(Self.sweep, registry: registry, overrides: ["qat.add=5", "matrix.lr=[0.1]"])
        XCTAssertEqual(plan.instances.filter { $0.stageID == "qat" }.map(\.name), ["qat"], "qat no longer references the matrix")
        XCTAssertEqual(plan.instance(named: "qat")?.parameters["add"], .double(5))
        XCTAssertEqual(plan.instances.filter { $0.stageID == "tune" }.map(\.name), ["tune[lr=0.1]"])
    }

    func testSetErrors() {
        let unknownStage = manifestErrors { _ = try TemporaryProject().plan(Self.sweep, registry: self.registry, overrides: ["qta.add=1"]) }
        XCTAssertTrue(unknownStage.contains("no stage 'qta'") && unknownStage.contains("did you mean 'qat'?"), unknownStage)
        let badType = manifestErrors { _ = try TemporaryProject().plan(Self.sweep, registry: self.registry, overrides: ["base.value=abc"]) }
        XCTAssertTrue(badType.contains("parameter 'value' (from --set): expected a number"), badType)
        XCTAssertThrowsError(try Override(parsing: "novalue"))
    }

    func testUnknownMatrixReference() {
        let text = manifestErrors {
            _ = try TemporaryProject().plan("matrix: {bits: [1]}\nstages:\n  a: {uses: number, with: {value: '${matrix.bist}'}}\n", registry: self.registry)
        }
        XCTAssertTrue(text.contains("pipeline.yaml:3:35: error: '${matrix.bist}' names no entry of 'matrix:'"), text)
        XCTAssertTrue(text.contains("did you mean 'bits'?"), text)
    }

    func testDefaultsAreFilledSoExplicitDefaultsDoNotChangeKeys() throws {
        let project = try TemporaryProject()
        let implicit = try project.plan("stages:\n  a: {uses: number, with: {value: 1}}\n", registry: registry)
        let explicit = try project.plan("stages:\n  a: {uses: number, with: {value: 1.0, label: ''}}\n", registry: registry)
        XCTAssertEqual(implicit.instances[0].parameters, explicit.instances[0].parameters)
        let previewA = try PlanPreview(plan: implicit, store: project.store).statuses()
        let previewB = try PlanPreview(plan: explicit, store: project.store).statuses()
        XCTAssertEqual(previewA[0].status, previewB[0].status)
    }

    /// issue #21: `bits: [4, 6, 8, 4]` would plan two instances with one name and key; refused at the repeated value.
    func testRepeatedMatrixValueIsRefusedWhereItStands() {
        let text = manifestErrors {
            _ = try TemporaryProject().plan("matrix:\n  bits: [4, 6, 8, 4]\nstages:\n  a: {uses: number, with: {value: '${matrix.bits}'}}\n", registry: self.registry)
        }
        XCTAssertTrue(text.contains("pipeline.yaml:2:19: error: matrix 'bits' lists 4 twice"), text)
        let fromSet = manifestErrors { _ = try TemporaryProject().plan(Self.sweep, registry: self.registry, overrides: ["matrix.lr=[0.1, 0.2, 0.1]"]) }
        XCTAssertTrue(fromSet.contains("--set matrix.lr=[0.1, 0.2, 0.1]: matrix 'lr' lists 0.1 twice"), fromSet)
    }

    /// The same mistake in every instance of a swept stage is one line, with the number of instances, not one per instance.
    func testAProblemSharedByEveryMatrixInstanceIsReportedOnce() {
        let values = (1...1000).map(String.init).joined(separator: ", ")
        let manifest = "matrix: {bits: [\(values)]}\nstages:\n  base: {uses: number, with: {value: 1}}\n  qat: {uses: sum, needs: base, with: {add: '${matrix.bits}', mode: tripple}}\n"
        var diagnostics: [ManifestDiagnostic] = []
        do { _ = try TemporaryProject().plan(manifest, registry: registry) } catch let error as ManifestError { diagnostics = error.diagnostics } catch { XCTFail("\(error)") }
        XCTAssertEqual(diagnostics.count, 1, "\(diagnostics.prefix(3))")
        let text = diagnostics.first.map(String.init(describing:)) ?? ""
        XCTAssertTrue(text.contains("pipeline.yaml:4:"), text)
        XCTAssertTrue(text.contains("stage 'qat' (1000 matrix instances: qat[bits=1], qat[bits=2], qat[bits=3], …), parameter 'mode'"), text)
        // Problems that differ between instances stay apart; one instance's problem names the instance.
        let apart = manifestErrors {
            _ = try TemporaryProject().plan("matrix: {m: [tripple, quad, plain]}\nstages:\n  base: {uses: number, with: {value: 1}}\n  s: {uses: sum, needs: base, with: {mode: '${matrix.m}'}}\n", registry: self.registry)
        }
        XCTAssertTrue(apart.contains("stage 's[m=tripple]', parameter 'mode'") && apart.contains("stage 's[m=quad]', parameter 'mode'"), apart)
    }

    /// `qatflow run MANIFEST STAGE...`: those stages (a stage id means all its instances) and what they need.
    func testTargetsKeepOnlyWhatTheyNeed() throws {
        let plan = try TemporaryProject().plan(Self.sweep, registry: registry)
        XCTAssertEqual(try plan.restricted(to: []).instances.count, plan.instances.count)
        XCTAssertEqual(try plan.restricted(to: ["qat"]).instances.map(\.name), ["base", "calib", "qat[bits=8]", "qat[bits=4]", "qat[bits=2]"])
        XCTAssertEqual(try plan.restricted(to: ["tune[bits=4,lr=0.01]", "calib"]).instances.map(\.name),
                       ["base", "calib", "qat[bits=4]", "tune[bits=4,lr=0.01]"])
        XCTAssertThrowsError(try plan.restricted(to: ["tnue"])) { error in
            XCTAssertTrue("\(error)".contains("no stage 'tnue'") && "\(error)".contains("did you mean 'tune'?"), "\(error)")
        }
    }
}
