import XCTest
import Pipeline

final class ManifestTests: XCTestCase {
    let log = ExecutionLog()
    var registry: StageRegistry { TestStages.registry(log: log) }

    func testValidManifestParses() throws {
        let manifest = try ManifestParser.parse("""
            name: demo
            datasets:
              calib: {source: fashion-mnist, split: train, limit: 100}
            stages:
              a: {uses: number, with: {value: 1}}
              b:
                uses: sum
                needs: a
                with: {add: 2.5}
                outputs: {value: out/b.txt}
            """, file: "demo.yaml")
        XCTAssertEqual(manifest.name, "demo")
        XCTAssertEqual(manifest.stages.map(\.id), ["a", "b"])
        XCTAssertEqual(manifest.stages[1].needs, ["a"])
        XCTAssertEqual(manifest.stages[1].outputs, ["value": "out/b.txt"])
        XCTAssertEqual(manifest.datasets.first?.spec.limit, 100)
    }

    func testUnknownKeyNamesLineColumnAndSuggestion() {
        let text = manifestErrors {
            _ = try ManifestParser.parse("name: x\nstages:\n  a:\n    uses: number\n    wiht: {value: 1}\n", file: "p.yaml")
        }
        XCTAssertTrue(text.contains("p.yaml:5:5: error: unknown key 'wiht'"), text)
        XCTAssertTrue(text.contains("did you mean 'with'?"), text)
    }

    func testUnknownTopLevelKey() {
        let text = manifestErrors { _ = try ManifestParser.parse("name: x\nstage:\n  a: {uses: number}\n", file: "p.yaml") }
        XCTAssertTrue(text.contains("p.yaml:2:1: error: unknown key 'stage'"), text)
        XCTAssertTrue(text.contains("did you mean 'stages'?"), text)
    }

    func testTypeErrorPointsAtValue() {
        let text = manifestErrors {
            _ = try TemporaryProject().plan("name: x\nstages:\n  a:\n    uses: number\n    with:\n      value: lots\n", registry: registry)
        }
        XCTAssertTrue(text.contains("pipeline.yaml:6:14: error: stage 'a', parameter 'value': expected a number, found string \"lots\""), text)
    }

    func testStructuralTypeError() {
        let text = manifestErrors { _ = try ManifestParser.parse("stages:\n  a:\n    uses: [number]\n", file: "p.yaml") }
        XCTAssertTrue(text.contains("p.yaml:3:11: error: 'uses' (a stage kind) must be a string; found a list"), text)
    }

    func testCycleIsPrinted() {
        let text = manifestErrors {
            _ = try ManifestParser.parse("""
                stages:
                  a: {uses: sum, needs: c}
                  b: {uses: sum, needs: a}
                  c: {uses: sum, needs: b}
                """, file: "p.yaml")
        }
        XCTAssertTrue(text.contains("p.yaml:2:3: error: dependency cycle: a -> c -> b -> a"), text)
    }

    func testUnknownNeeds() {
        let text = manifestErrors {
            _ = try ManifestParser.parse("stages:\n  convert: {uses: number}\n  b: {uses: sum, needs: [covnert]}\n", file: "p.yaml")
        }
        XCTAssertTrue(text.contains("p.yaml:3:26: error: stage 'b' needs 'covnert', which is not a stage in this manifest (did you mean 'convert'?)"), text)
    }

    func testUnknownStageKind() {
        let text = manifestErrors {
            _ = try TemporaryProject().plan("stages:\n  a: {uses: nubmer, with: {value: 1}}\n", registry: registry)
        }
        XCTAssertTrue(text.contains("pipeline.yaml:2:13: error: unknown stage kind 'nubmer'"), text)
        XCTAssertTrue(text.contains("did you mean 'number'?"), text)
    }

    func testUnknownParameterAndMissingRequired() {
        let text = manifestErrors {
            _ = try TemporaryProject().plan("stages:\n  a: {uses: number, with: {valeu: 1}}\n", registry: registry)
        }
        XCTAssertTrue(text.contains("pipeline.yaml:2:35: error: unknown parameter 'valeu'"), text)
        XCTAssertTrue(text.contains("did you mean 'value'?"), text)
        XCTAssertTrue(text.contains("pipeline.yaml:2:3: error: stage 'a' (kind 'number') is missing required parameter 'value'"), text)
    }

    func testOutputPathsOutsideProjectAreRefused() {
        let text = manifestErrors {
            _ = try ManifestParser.parse("""
                stages:
                  a:
                    uses: number
                    outputs: {value: ../escape.txt}
                  b:
                    uses: number
                    outputs: {value: /tmp/abs.txt}
                """, file: "p.yaml")
        }
        XCTAssertTrue(text.contains("p.yaml:4:22: error: output path '../escape.txt' leaves the project"), text)
        XCTAssertTrue(text.contains("p.yaml:7:22: error: output path '/tmp/abs.txt' is absolute"), text)
    }

    func testYAMLSyntaxError() {
        let text = manifestErrors { _ = try ManifestParser.parse("stages:\n  a: {uses: number\n  b: 1\n", file: "p.yaml") }
        XCTAssertTrue(text.hasPrefix("p.yaml:"), text)
        XCTAssertTrue(text.contains("YAML syntax"), text)
    }

    func testDuplicateKey() {
        let text = manifestErrors { _ = try ManifestParser.parse("stages:\n  a: {uses: number}\n  a: {uses: sum}\n", file: "p.yaml") }
        XCTAssertTrue(text.contains("duplicate key 'a'"), text)
        XCTAssertTrue(text.hasPrefix("p.yaml:"), text)
    }

    func testAllErrorsReportedAtOnce() {
        let text = manifestErrors {
            _ = try ManifestParser.parse("stages:\n  a: {uses: number, bogus: 1}\n  b: {uses: sum, needs: zz}\n", file: "p.yaml")
        }
        XCTAssertEqual(text.split(separator: "\n").filter { $0.contains("error:") }.count, 2, text)
    }

    func testBadDataset() {
        let text = manifestErrors {
            _ = try ManifestParser.parse("datasets:\n  d: {source: fashion-mnst, split: valid}\nstages:\n  a: {uses: number}\n", file: "p.yaml")
        }
        XCTAssertTrue(text.contains("p.yaml:2:15: error: unknown dataset source 'fashion-mnst'"), text)
        XCTAssertTrue(text.contains("did you mean 'fashion-mnist'?"), text)
        XCTAssertTrue(text.contains("p.yaml:2:36: error: unknown split 'valid'"), text)
    }

    /// `resources:` overrides the kind's defaults per stage; bad sizes and durations are refused at line:column.
    func testStageResources() throws {
        let plan = try TemporaryProject().plan("""
            stages:
              a: {uses: number, with: {value: 1}, resources: {cpus: 8, mem: 16G, time: 1h30m}}
              b: {uses: number, with: {value: 2}, resources: {time: "01:00:00"}}
              c: {uses: number, with: {value: 3}}
            """, registry: registry)
        XCTAssertEqual(plan.instance(named: "a")?.resources, StageResources(cpus: 8, memoryMB: 16384, minutes: 90))
        XCTAssertEqual(plan.instance(named: "b")?.resources, StageResources(cpus: 2, memoryMB: 4096, minutes: 60))
        XCTAssertEqual(plan.instance(named: "c")?.resources, StageResources())
        XCTAssertEqual(StageResources.parseMemory("512M"), 512)
        XCTAssertEqual(StageResources.parseTime("1-00:00:00"), 1440)
        XCTAssertEqual(StageResources.parseTime("45"), 45)
        let text = manifestErrors {
            _ = try TemporaryProject().plan("""
                stages:
                  a: {uses: number, with: {value: 1}, resources: {cpus: 0, mem: lots, time: soon, gpus: 1}}
                """, registry: registry)
        }
        XCTAssertTrue(text.contains("pipeline.yaml:2:57: error: 'cpus' must be ≥ 1; found 0"), text)
        XCTAssertTrue(text.contains("error: 'mem' must be a size such as 16G or 512M; found string 'lots'"), text)
        XCTAssertTrue(text.contains("error: 'time' must be a duration such as 30m"), text)
        XCTAssertTrue(text.contains("unknown key 'gpus' in 'resources'"), text)
    }

    /// The array sources and training augmentation keys parse into specs; their mistakes are refused at line:column.
    func testArraySourcesAndAugmentationKeys() throws {
        let manifest = try ManifestParser.parse("""
            datasets:
              train: {source: image-folder, path: data/train, random_resized_crop: 224, flip: true}
              arrays: {source: npy, path: data/x.npz, channels: gray}
              digits: {source: idx, path: d/images-idx3-ubyte, labels: d/labels-idx1-ubyte}
              cifar: {source: cifar10, split: test, mean: [0.49, 0.48, 0.45], std: 0.25}
              mnn: {source: image-folder, path: x, mean: [127.5, 127.5, 127.5], normal: 0.00784313725}
            stages:
              a: {uses: number}
            """, file: "p.yaml")
        let specs = Dictionary(uniqueKeysWithValues: manifest.datasets.map { ($0.name, $0.spec) })
        XCTAssertEqual(specs["train"]?.randomResizedCrop, 224)
        XCTAssertEqual(specs["train"]?.flip, true)
        XCTAssertEqual(specs["arrays"]?.effectiveChannels, .gray)
        XCTAssertEqual(specs["digits"]?.labels, "d/labels-idx1-ubyte")
        XCTAssertEqual(specs["cifar"]?.split, .test)
        XCTAssertEqual(specs["mnn"]?.mean, [0.5, 0.5, 0.5], "MNN's mean on 0–255")
        XCTAssertEqual(specs["mnn"]?.std.first ?? 0, 0.5, accuracy: 1e-9, "MNN's normal = 1/(255·std)")
        let text = manifestErrors {
            _ = try ManifestParser.parse("""
                datasets:
                  a: {source: cifar10}
                  b: {source: npy, split: test}
                  c: {source: image-folder, path: x, resize: 256, random_resized_crop: 224}
                  d: {source: image-folder, path: x, flip: 1}
                  e: {source: fashion-mnist, split: test, flip: true}
                stages:
                  s: {uses: number}
                """, file: "p.yaml")
        }
        XCTAssertTrue(text.contains("p.yaml:2:6: error: dataset 'a' needs 'split:'"), text)
        XCTAssertTrue(text.contains("p.yaml:3:6: error: dataset 'b' (npy) needs 'path:'"), text)
        XCTAssertTrue(text.contains("p.yaml:4:6: error: dataset 'c': invalid dataset spec: random_resized_crop replaces resize and crop"), text)
        XCTAssertTrue(text.contains("p.yaml:5:44: error: 'flip' must be true or false"), text)
        XCTAssertTrue(text.contains("p.yaml:6:43: error: dataset 'e': 'flip' applies to"), text)
    }

    func testChoiceAndDatasetParametersChecked() throws {
        let text = manifestErrors {
            _ = try TemporaryProject().plan("stages:\n  a: {uses: number, with: {value: 1}}\n  b: {uses: sum, needs: a, with: {mode: tripel}}\n", registry: registry)
        }
        XCTAssertTrue(text.contains("'tripel' is not one of plain, double"), text)
    }
}
