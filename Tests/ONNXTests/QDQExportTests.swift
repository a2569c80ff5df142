import Foundation
import Graph
import Inference
import ONNX
import Tensor
import XCTest

/// ONNX QDQ export: small QDQ graphs, built by hand from the contract in docs/quantization.md (independent of the
/// quantizer), are exported, checked by `onnx.checker` and run by ONNX Runtime, whose outputs must match our int8
/// engine (ORT's fused QLinear kernels) and our float simulation (ORT without optimizations).
final class QDQExportTests: XCTestCase {
    static let images = 64

    /// W8A8 is standard ONNX everywhere; ORT's fused int8 kernels compute it exactly only where they do not saturate
    /// (VNNI), so that is where agreement is asserted. Where this CPU's ORT saturates (AVX2), the test asserts what
    /// the user would see instead: the exporter's check names the layers, ORT's fused kernels disagree with our int8
    /// engine, and ORT's plain-ONNX run (float arithmetic) still matches the simulation.
    func testW8A8ExportIsStandardONNXAndMatchesInt8EngineWhereORTIsExact() throws {
        let result = try exportAndRun(weightBits: 8, activationBits: 8, name: "w8a8")
        XCTAssertEqual(result.report.attributes.filter { $0 == "bits" }, [], "no qatflow-only attribute left")
        XCTAssertEqual(result.report.modelOps["Clip"], 1, "only the network's ReLU6: 8-bit activations need no integer Clip")
        XCTAssertTrue(result.report.quantizerScaleShapes.allSatisfy { $0 == [] }, "per-tensor scales are scalars (one was [1]): \(result.report.quantizerScaleShapes)")
        XCTAssertGreaterThan(result.report.optimizedOps["QLinearConv"] ?? 0, 0, "ORT fuses the DQ → Conv → Q groups: \(result.report.optimizedOps)")
        XCTAssertEqual(Set(PairSaturationCheck.layersThatMaySaturate(in: result.graph).map(\.node)), ["conv1", "dw", "fc"],
                       "8-bit weights with 8-bit inputs: every layer may saturate in ORT without VNNI")
        let probe = try ORTCheck.saturationProbe(emulatedAVX2: false)
        print("ORT \(probe.onnxruntime) on this CPU: 255·127 + 255·127 = \(probe.pairSum)")
        if probe.saturates {
            result.assertSaturatedKernelsDisagree()
        } else {
            result.assertAgreement()
        }
    }

    /// The safe export (7-bit weights, what `target: onnxruntime-x86` writes) on an emulated AVX2-only CPU, and the
    /// saturating W8A8 one beside it: ORT without VNNI computes the first exactly and not the second. Runs on every
    /// machine, so a VNNI machine also tests what an AVX2 user's ORT does.
    func testSevenBitWeightsAreExactInONNXRuntimeOnAnEmulatedAVX2CPU() throws {
        let probe = try ORTCheck.saturationProbe(emulatedAVX2: true)
        XCTAssertTrue(probe.saturates, "the emulated Haswell has no VNNI: ORT adds u8·s8 pairs in saturating int16 (got \(probe.pairSum))")
        let safe = try exportAndRun(weightBits: 7, activationBits: 8, name: "w7a8-avx2", emulatedAVX2: true)
        XCTAssertEqual(PairSaturationCheck.layersThatMaySaturate(in: safe.graph), [])
        XCTAssertGreaterThan(safe.report.optimizedOps["QLinearConv"] ?? 0, 0, "fused int8 kernels ran: \(safe.report.optimizedOps)")
        safe.assertAgreement()
        let saturating = try exportAndRun(weightBits: 8, activationBits: 8, name: "w8a8-avx2", emulatedAVX2: true)
        saturating.assertSaturatedKernelsDisagree()
        // Natively too, wherever this machine's ORT is exact or not: the safe file agrees.
        try exportAndRun(weightBits: 7, activationBits: 8, name: "w7a8").assertAgreement()
    }

    /// Where ORT's check flags nothing, the bound really holds: 7-bit activations with 8-bit weights are safe too.
    func testPairSaturationCheckFollowsTheBitsOfEachLayer() throws {
        let calibration = randomInput(seed: 1)
        XCTAssertEqual(PairSaturationCheck.layersThatMaySaturate(in: try TinyQDQNetwork.quantized(weightBits: 8, activationBits: 7, calibration: calibration)), [])
        XCTAssertEqual(PairSaturationCheck.layersThatMaySaturate(in: try TinyQDQNetwork.quantized(weightBits: 4, activationBits: 8, calibration: calibration)), [])
        let w8a8 = try TinyQDQNetwork.quantized(weightBits: 8, activationBits: 8, calibration: calibration)
        for layer in PairSaturationCheck.layersThatMaySaturate(in: w8a8) {
            XCTAssertGreaterThan(layer.worstPairSum, PairSaturationCheck.int16Limit)
            XCTAssertLessThanOrEqual(layer.worstPairSum, 255 * 127 * 2)
        }
        let warning = try XCTUnwrap(PairSaturationCheck.warning(for: w8a8, file: "m.safetensors"))
        for fragment in ["m.safetensors", "3 layers", "without VNNI", "target: onnxruntime-x86"] {
            XCTAssertTrue(warning.contains(fragment), "«\(fragment)» in «\(warning)»")
        }
        XCTAssertNil(PairSaturationCheck.warning(for: try TinyQDQNetwork.quantized(weightBits: 7, activationBits: 8, calibration: calibration), file: "m"))
    }

    /// bits < 8: ONNX's QuantizeLinear saturates to 0…255, so an integer Clip per quantizer restores 0…2^b − 1.
    func testSubEightBitActivationsAreClippedInTheIntegerDomain() throws {
        for (weightBits, activationBits) in [(4, 4), (8, 5)] {
            let result = try exportAndRun(weightBits: weightBits, activationBits: activationBits, name: "w\(weightBits)a\(activationBits)")
            let quantizers = result.graph.nodes.filter { $0.op == .quantizeLinear }.count
            XCTAssertEqual(result.report.modelOps["Clip", default: 0] - 1, quantizers, "one integer Clip per QuantizeLinear besides the ReLU6")
            XCTAssertEqual(result.report.attributes.filter { $0 == "bits" }, [])
            XCTAssertGreaterThan(result.report.optimizedOps["QLinearConv"] ?? 0, 0, "the integer Clip keeps ORT's QDQ fusion: \(result.report.optimizedOps)")
            result.assertAgreement()
        }
    }

    /// The float export still gives ONNX Runtime our float executor's outputs.
    func testFloatExportMatchesFloatExecutor() throws {
        let graph = TinyQDQNetwork.floatGraph()
        let directory = try temporaryDirectory("float")
        let input = randomInput(seed: 3)
        let model = directory.appendingPathComponent("float.onnx")
        try ONNXExporter.write(graph, to: model)
        let report = try ORTCheck.run(model: model, input: input, directory: directory)
        XCTAssertEqual(report.outputShape, [Self.images, 10])
        let ours = try FloatExecutor(graph: graph).run(["x": input])["logits"]!.data
        XCTAssertLessThanOrEqual(maxAbsoluteDifference(ours, try Float32File.read(directory.appendingPathComponent("optimized.f32"))), 1e-4)
        XCTAssertLessThanOrEqual(maxAbsoluteDifference(ours, try Float32File.read(directory.appendingPathComponent("reference.f32"))), 1e-4)
    }

    func testIllegalQuantizationParametersAreRefusedWithTheNodeName() throws {
        var graph = try TinyQDQNetwork.quantized(weightBits: 8, activationBits: 8, calibration: randomInput(seed: 1))
        let index = graph.nodes.firstIndex { $0.op == .quantizeLinear }!
        graph.nodes[index].attributes["bits"] = .int(9)
        XCTAssertThrowsError(try ONNXExporter.export(graph)) { error in
            XCTAssertTrue("\(error)".contains(graph.nodes[index].name) && "\(error)".contains("bits 9"), "\(error)")
        }

        var biased = try TinyQDQNetwork.quantized(weightBits: 8, activationBits: 8, calibration: randomInput(seed: 1))
        biased.initializers["b1::q.zero_point"] = Initializer(name: "b1::q.zero_point", shape: [8], storage: .int32(Array(repeating: 1, count: 8)))
        XCTAssertThrowsError(try ONNXExporter.export(biased)) { error in
            XCTAssertTrue("\(error)".contains("b1::q/DequantizeLinear") && "\(error)".contains("zero point must be 0"), "\(error)")
        }
    }

    // MARK: - Helpers

    struct ExportRun {
        let graph: Graph
        let input: Tensor
        let report: ORTCheck.Report
        let optimized: [Float]
        let reference: [Float]
        let name: String

        /// ORT's fused int8 kernels vs our int8 engine, and plain-ONNX ORT vs our float simulation: both pairs
        /// compute the same QDQ function, differing only in where requantization rounds, so nearly every logit
        /// is within one output step and top-1 agrees.
        func assertAgreement(file: StaticString = #filePath, line: UInt = #line) {
            do {
                let step = try TinyQDQNetwork.outputStep(of: graph)
                let int8 = try Int8Executor(graph: graph).run(["x": input])["logits"]!.data
                let simulated = try FloatExecutor(graph: graph).run(["x": input])["logits"]!.data
                let pairs = [("ORT optimized vs Int8Executor", optimized, int8), ("ORT reference vs simulation", reference, simulated)]
                for (label, theirs, ours) in pairs {
                    XCTAssertEqual(theirs.count, ours.count, "\(name) \(label)", file: file, line: line)
                    let withinStep = zip(theirs, ours).filter { abs($0 - $1) <= step * 1.001 }.count
                    let agreement = Self.top1Agreement(theirs, ours, classes: 10)
                    print("\(name) \(label): \(withinStep)/\(ours.count) logits within one step (\(step)), top-1 agreement \(agreement * 100) %")
                    XCTAssertGreaterThanOrEqual(Double(withinStep) / Double(ours.count), 0.99, "\(name) \(label)", file: file, line: line)
                    XCTAssertGreaterThanOrEqual(agreement, 0.95, "\(name) \(label)", file: file, line: line)
                }
            } catch {
                XCTFail("\(name): \(error)", file: file, line: line)
            }
        }

        /// ORT's fused kernels on a CPU where they saturate: many logits off by more than one output step, while
        /// ORT's plain-ONNX run (float Conv between Q/DQ) still matches our simulation.
        func assertSaturatedKernelsDisagree(file: StaticString = #filePath, line: UInt = #line) {
            do {
                let step = try TinyQDQNetwork.outputStep(of: graph)
                let int8 = try Int8Executor(graph: graph).run(["x": input])["logits"]!.data
                let simulated = try FloatExecutor(graph: graph).run(["x": input])["logits"]!.data
                let saturatedWithinStep = zip(optimized, int8).filter { abs($0 - $1) <= step * 1.001 }.count
                let referenceWithinStep = zip(reference, simulated).filter { abs($0 - $1) <= step * 1.001 }.count
                print("\(name) ORT saturating kernels vs Int8Executor: \(saturatedWithinStep)/\(int8.count) logits within one step; ORT reference vs simulation: \(referenceWithinStep)/\(simulated.count)")
                XCTAssertLessThan(Double(saturatedWithinStep) / Double(int8.count), 0.9, "\(name): saturation should show", file: file, line: line)
                XCTAssertGreaterThanOrEqual(Double(referenceWithinStep) / Double(simulated.count), 0.99, "\(name) ORT reference vs simulation", file: file, line: line)
            } catch {
                XCTFail("\(name): \(error)", file: file, line: line)
            }
        }

        static func top1Agreement(_ a: [Float], _ b: [Float], classes: Int) -> Double {
            let rows = min(a.count, b.count) / classes
            func argmax(_ values: [Float], _ row: Int) -> Int {
                (0..<classes).max { values[row * classes + $0] < values[row * classes + $1] }!
            }
            return Double((0..<rows).filter { argmax(a, $0) == argmax(b, $0) }.count) / Double(max(rows, 1))
        }
    }

    private func exportAndRun(weightBits: Int, activationBits: Int, name: String, emulatedAVX2: Bool = false) throws -> ExportRun {
        let graph = try TinyQDQNetwork.quantized(weightBits: weightBits, activationBits: activationBits, calibration: randomInput(seed: 1))
        let directory = try temporaryDirectory(name)
        let model = directory.appendingPathComponent("\(name).onnx")
        try ONNXExporter.write(graph, to: model)
        let input = randomInput(seed: 2)
        let report = try ORTCheck.run(model: model, input: input, directory: directory, emulatedAVX2: emulatedAVX2)
        XCTAssertEqual(report.outputShape, [Self.images, 10])
        XCTAssertEqual(report.opset, 13)
        return ExportRun(graph: graph, input: input, report: report,
                         optimized: try Float32File.read(directory.appendingPathComponent("optimized.f32")),
                         reference: try Float32File.read(directory.appendingPathComponent("reference.f32")), name: name)
    }

    private func randomInput(seed: UInt64) -> Tensor {
        var generator = SplitMixGenerator(seed: seed)
        return Tensor(shape: [Self.images, 1, 12, 12], data: (0..<(Self.images * 144)).map { _ in Float.random(in: -1...2, using: &generator) })
    }

    private func temporaryDirectory(_ name: String) throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-qdq-export-\(ProcessInfo.processInfo.processIdentifier)/\(name)")
        try? FileManager.default.removeItem(at: directory)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        return directory
    }
}

/// Runs Scripts/ort_qdq_check.py (onnx.checker, ORT optimized and unoptimized) and decodes its JSON line.
enum ORTCheck {
    struct Report: Decodable {
        let outputShape: [Int]
        let optimizedOps: [String: Int]
        let modelOps: [String: Int]
        let attributes: [String]
        let opset: Int
        /// Shapes of the QuantizeLinear scales in the exported file.
        let quantizerScaleShapes: [[Int]]

        enum CodingKeys: String, CodingKey {
            case outputShape = "output_shape", optimizedOps = "optimized_ops", modelOps = "model_ops", attributes, opset
            case quantizerScaleShapes = "quantizer_scale_shapes"
        }
    }

    static let script = TestPaths.repositoryRoot.appendingPathComponent("Tests/ONNXTests/Scripts/ort_qdq_check.py")

    static func run(model: URL, input: Tensor, directory: URL, emulatedAVX2: Bool = false) throws -> Report {
        let inputFile = directory.appendingPathComponent("input.f32")
        try input.data.map { $0.bitPattern.littleEndian }.withUnsafeBytes { Data($0) }.write(to: inputFile)
        let stdout = try python([script.path, model.path, inputFile.path, input.shape.map(String.init).joined(separator: ","), directory.path],
                                emulatedAVX2: emulatedAVX2)
        let lastLine = stdout.split(separator: "\n").last.map(String.init) ?? ""
        return try JSONDecoder().decode(Report.self, from: Data(lastLine.utf8))
    }

    struct SaturationProbe: Decodable {
        let onnxruntime: String
        let pairSum: Int
        let saturates: Bool
        enum CodingKeys: String, CodingKey { case onnxruntime, pairSum = "pair_sum", saturates }
    }

    /// scripts/ort_saturation_probe.py: whether ORT's u8×s8 kernels saturate on this (or the emulated AVX2) CPU.
    static func saturationProbe(emulatedAVX2: Bool) throws -> SaturationProbe {
        let script = TestPaths.repositoryRoot.appendingPathComponent("scripts/ort_saturation_probe.py")
        return try JSONDecoder().decode(SaturationProbe.self, from: Data(try python([script.path], emulatedAVX2: emulatedAVX2).utf8))
    }

    /// Runs a script with the venv's Python, natively or through scripts/avx2-emulated. Without QEMU the emulated
    /// run is skipped with the reason, except in CI (CI=true), whose .ci/run installs it.
    static func python(_ arguments: [String], emulatedAVX2: Bool) throws -> String {
        let python = TestPaths.python
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            throw FixtureError("the Python venv is missing (\(python.path)); run make venv")
        }
        let process = Process()
        if emulatedAVX2 {
            process.executableURL = TestPaths.repositoryRoot.appendingPathComponent("scripts/avx2-emulated")
            process.arguments = [python.path] + arguments
        } else {
            process.executableURL = python
            process.arguments = arguments
        }
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        let stdout = output.fileHandleForReading.readDataToEndOfFile()
        let stderr = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        if emulatedAVX2 && process.terminationStatus == 3 && ProcessInfo.processInfo.environment["CI"] != "true" {
            throw XCTSkip("no emulated AVX2 CPU here: \(stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard process.terminationStatus == 0 else {
            throw FixtureError("\(URL(fileURLWithPath: arguments[0]).lastPathComponent)\(emulatedAVX2 ? " (emulated AVX2)" : "") failed (status \(process.terminationStatus)): \(stderr)")
        }
        return String(decoding: stdout, as: UTF8.self)
    }
}

/// Seedable generator so failures reproduce.
struct SplitMixGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// conv 3×3 → relu → depthwise 3×3 → clip(0, 6) → add(residual) → GAP → flatten → gemm, and its QDQ form built
/// by hand from docs/quantization.md: uint8 activations with `bits`, int8 per-channel weights (axis 0), int32
/// biases with scale s_in·s_w, Flatten sharing the GAP's grid. One activation scale is stored with shape [1]
/// (an ONNX per-axis form for a per-tensor value) so the export has to turn it into a scalar.
enum TinyQDQNetwork {
    static let points = ["x", "r1", "r2", "a", "g", "logits"]

    static func floatGraph() -> Graph {
        func values(_ count: Int, seed: UInt64, range: ClosedRange<Float>) -> [Float] {
            var generator = SplitMixGenerator(seed: seed)
            return (0..<count).map { _ in Float.random(in: range, using: &generator) }
        }
        let initializers = [
            Initializer(name: "w1", shape: [8, 1, 3, 3], storage: .float32(values(72, seed: 11, range: -0.5...0.5))),
            Initializer(name: "b1", shape: [8], storage: .float32(values(8, seed: 12, range: -0.1...0.1))),
            Initializer(name: "w2", shape: [8, 1, 3, 3], storage: .float32(values(72, seed: 13, range: -0.5...0.5))),
            Initializer(name: "b2", shape: [8], storage: .float32(values(8, seed: 14, range: -0.1...0.1))),
            Initializer(name: "fc", shape: [10, 8], storage: .float32(values(80, seed: 15, range: -0.5...0.5))),
            Initializer(name: "fcb", shape: [10], storage: .float32(values(10, seed: 16, range: -0.1...0.1))),
        ]
        let window: [String: AttributeValue] = ["pads": .ints([1, 1, 1, 1]), "kernel_shape": .ints([3, 3])]
        let nodes = [
            Node(name: "conv1", op: .conv, inputs: ["x", "w1", "b1"], outputs: ["c1"], attributes: window),
            Node(name: "relu1", op: .relu, inputs: ["c1"], outputs: ["r1"]),
            Node(name: "dw", op: .conv, inputs: ["r1", "w2", "b2"], outputs: ["c2"], attributes: window.merging(["group": .int(8)]) { $1 }),
            Node(name: "clip", op: .clip, inputs: ["c2"], outputs: ["r2"], attributes: ["min": .float(0), "max": .float(6)]),
            Node(name: "add", op: .add, inputs: ["r1", "r2"], outputs: ["a"]),
            Node(name: "gap", op: .globalAveragePool, inputs: ["a"], outputs: ["g"]),
            Node(name: "flatten", op: .flatten, inputs: ["g"], outputs: ["f"], attributes: ["axis": .int(1)]),
            Node(name: "fc", op: .gemm, inputs: ["f", "fc", "fcb"], outputs: ["logits"], attributes: ["transB": .int(1)]),
        ]
        return Graph(name: "tiny", inputs: [ValueInfo(name: "x", shape: [-1, 1, 12, 12])], outputs: [ValueInfo(name: "logits", shape: [-1, 10])],
                     nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
    }

    struct Grid { let scale: Float; let zeroPoint: UInt8 }

    static func quantized(weightBits: Int, activationBits: Int, calibration: Tensor) throws -> Graph {
        let float = floatGraph()
        var probe = float
        probe.outputs = points.filter { $0 != "x" }.map { ValueInfo(name: $0, shape: []) }
        let observed = try FloatExecutor(graph: probe).run(["x": calibration]).merging(["x": calibration]) { $1 }
        var grids: [String: Grid] = [:]
        for name in points {
            let data = observed[name]!.data
            let low = min(0, data.min()!), high = max(0, data.max()!)
            let levels = Float((1 << activationBits) - 1)
            let scale = (high - low) / levels
            grids[name] = Grid(scale: scale, zeroPoint: UInt8(min(max((-low / scale).rounded(.toNearestOrEven), 0), levels)))
        }
        grids["f"] = grids["g"]

        var initializers = float.initializers
        var nodes: [Node] = []
        func pair(_ source: String, _ quantized: String, _ dequantized: String, _ grid: Grid, scaleShape: [Int] = []) {
            initializers[quantized + ".scale"] = Initializer(name: quantized + ".scale", shape: scaleShape, storage: .float32([grid.scale]))
            initializers[quantized + ".zero_point"] = Initializer(name: quantized + ".zero_point", shape: [], storage: .uint8([grid.zeroPoint]))
            let parameters = [quantized + ".scale", quantized + ".zero_point"]
            nodes.append(Node(name: quantized + "/QuantizeLinear", op: .quantizeLinear, inputs: [source] + parameters, outputs: [quantized], attributes: ["bits": .int(activationBits)]))
            nodes.append(Node(name: quantized + "/DequantizeLinear", op: .dequantizeLinear, inputs: [quantized] + parameters, outputs: [dequantized], attributes: ["bits": .int(activationBits)]))
        }
        func weights(_ weight: String, _ bias: String, input: String) {
            let w = initializers.removeValue(forKey: weight)!, b = initializers.removeValue(forKey: bias)!
            let channels = w.shape[0], perChannel = w.storage.count / channels
            let values = w.storage.floats, limit = Float((1 << (weightBits - 1)) - 1)
            var quantized: [Int8] = [], scales: [Float] = []
            for channel in 0..<channels {
                let slice = values[(channel * perChannel)..<((channel + 1) * perChannel)]
                let scale = max(slice.map(abs).max()!, 1e-8) / limit
                scales.append(scale)
                quantized += slice.map { Int8(min(max(($0 / scale).rounded(.toNearestOrEven), -limit), limit)) }
            }
            let biasScales = scales.map { $0 * grids[input]!.scale }
            let quantizedBias = zip(b.storage.floats, biasScales).map { Int32(($0 / $1).rounded(.toNearestOrEven)) }
            for (name, storage, scale, zeroPoint, shape, bits) in [
                (weight, TensorStorage.int8(quantized), scales, TensorStorage.int8(Array(repeating: 0, count: channels)), w.shape, Optional(weightBits)),
                (bias, TensorStorage.int32(quantizedBias), biasScales, TensorStorage.int32(Array(repeating: 0, count: channels)), [channels], nil),
            ] {
                initializers[name + "::q"] = Initializer(name: name + "::q", shape: shape, storage: storage)
                initializers[name + "::q.scale"] = Initializer(name: name + "::q.scale", shape: [channels], storage: .float32(scale))
                initializers[name + "::q.zero_point"] = Initializer(name: name + "::q.zero_point", shape: [channels], storage: zeroPoint)
                var attributes: [String: AttributeValue] = ["axis": .int(0)]
                if let bits { attributes["bits"] = .int(bits) }
                nodes.append(Node(name: name + "::q/DequantizeLinear", op: .dequantizeLinear,
                                  inputs: [name + "::q", name + "::q.scale", name + "::q.zero_point"], outputs: [name], attributes: attributes))
            }
        }

        pair("x", "x::q", "x::dq", grids["x"]!)
        for var node in float.nodes {
            node.inputs = node.inputs.map { $0 == "x" ? "x::dq" : $0 }
            switch node.name {
            case "conv1": weights("w1", "b1", input: "x")
            case "dw": weights("w2", "b2", input: "r1")
            case "fc": weights("fc", "fcb", input: "f")
            default: break
            }
            let output = node.outputs[0]
            guard let grid = grids[output] else { nodes.append(node); continue }
            node.outputs = [output + "::float"]
            nodes.append(node)
            pair(output + "::float", output + "::q", output, grid, scaleShape: output == "a" ? [1] : [])
        }
        var graph = float
        graph.nodes = nodes
        graph.initializers = initializers
        return try graph.validated()
    }

    /// The scale of the DequantizeLinear producing the logits: one step of the output grid.
    static func outputStep(of graph: Graph) throws -> Float {
        guard let node = graph.nodes.first(where: { $0.op == .dequantizeLinear && $0.outputs == ["logits"] }),
              let scale = graph.initializers[node.inputs[1]]?.storage.floats.first else {
            throw FixtureError("the logits do not leave through a DequantizeLinear")
        }
        return scale
    }
}
