import Foundation
import Graph
import XCTest

/// Format 2's compact storage: bit-packed integers, fills, products, and what a reader sees when the file is
/// damaged, newer, or of format 1.
final class ModelFilePackingTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-packing-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    /// A QDQ convolution as the quantizer writes it: `x → Q → DQ`, weight `DQ(w::q)` with `bits`, bias
    /// `DQ(b::q)` with scale = input scale × weight scale, zero points all 0. The weight is `[o, c, k, k]`
    /// and runs through the whole narrow range of `bits`.
    static func qdqConvolution(bits: Int, outputs o: Int, inputs c: Int, kernel k: Int) throws -> Graph {
        let qmax = (1 << (bits - 1)) - 1
        let count = o * c * k * k
        var weights = (0..<count).map { Int8(($0 * 7 + bits) % (2 * qmax + 1) - qmax) }
        weights[0] = Int8(-qmax)
        if count > 1 { weights[count - 1] = Int8(qmax) }
        let weightScales = (0..<o).map { Float(0.01) + Float($0) * 0.00137 }
        let inputScale: Float = 0.0237
        let initializers = [
            Initializer(name: "x::q.scale", shape: [], storage: .float32([inputScale])),
            Initializer(name: "x::q.zero_point", shape: [], storage: .uint8([128])),
            Initializer(name: "w::q", shape: [o, c, k, k], storage: .int8(weights)),
            Initializer(name: "w::q.scale", shape: [o], storage: .float32(weightScales)),
            Initializer(name: "w::q.zero_point", shape: [o], storage: .int8([Int8](repeating: 0, count: o))),
            Initializer(name: "b::q", shape: [o], storage: .int32((0..<o).map { Int32($0 * 1000 - 2500) })),
            Initializer(name: "b::q.scale", shape: [o], storage: .float32(weightScales.map { $0 * inputScale })),
            Initializer(name: "b::q.zero_point", shape: [o], storage: .int32([Int32](repeating: 0, count: o))),
        ]
        let nodes = [
            Node(name: "x::q/QuantizeLinear", op: .quantizeLinear, inputs: ["x", "x::q.scale", "x::q.zero_point"], outputs: ["x::q"]),
            Node(name: "x::q/DequantizeLinear", op: .dequantizeLinear, inputs: ["x::q", "x::q.scale", "x::q.zero_point"], outputs: ["x::dq"]),
            Node(name: "w::q/DequantizeLinear", op: .dequantizeLinear, inputs: ["w::q", "w::q.scale", "w::q.zero_point"], outputs: ["w"],
                 attributes: ["axis": .int(0), "bits": .int(bits)]),
            Node(name: "b::q/DequantizeLinear", op: .dequantizeLinear, inputs: ["b::q", "b::q.scale", "b::q.zero_point"], outputs: ["b"],
                 attributes: ["axis": .int(0)]),
            Node(name: "conv", op: .conv, inputs: ["x::dq", "w", "b"], outputs: ["y"],
                 attributes: ["pads": .ints([k / 2, k / 2, k / 2, k / 2]), "kernel_shape": .ints([k, k])]),
        ]
        return try Graph(name: "qdq", inputs: [ValueInfo(name: "x", shape: [-1, c, 5, 5])], outputs: [ValueInfo(name: "y", shape: [-1, o, 5, 5])],
                         nodes: nodes, initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) })).validated()
    }

    /// A graph that only carries initializers (no node uses them; the file format does not care).
    static func holding(_ initializers: [Initializer]) -> Graph {
        Graph(name: "constants", inputs: [ValueInfo(name: "x", shape: [1])], outputs: [ValueInfo(name: "x", shape: [1])], nodes: [],
              initializers: Dictionary(uniqueKeysWithValues: initializers.map { ($0.name, $0) }))
    }

    func roundTrip(_ graph: Graph, file: StaticString = #filePath, line: UInt = #line) throws -> Data {
        let data = try ModelFile.encode(graph)
        ModelFileTestSupport.assertIdentical(try ModelFile.read(data: data, name: "packed.safetensors"), graph, file: file, line: line)
        XCTAssertEqual(try ModelFile.encode(ModelFile.read(data: data, name: "packed.safetensors")), data, "writing is deterministic", file: file, line: line)
        return data
    }

    /// The stored tensor of an initializer: its header entry (dtype, shape, data offsets).
    func storedTensor(of initializer: String, in data: Data) throws -> (dtype: String, shape: [Int], begin: Int, end: Int, key: String) {
        let names = ModelFileTestSupport.names(try ModelFileTestSupport.graphDocument(data))
        let key = String(try XCTUnwrap(names.firstIndex(of: initializer), initializer))
        let entry = try XCTUnwrap(try ModelFileTestSupport.header(data).json[key] as? [String: Any], "no tensor \(key) for \(initializer)")
        let offsets = try XCTUnwrap(entry["data_offsets"] as? [Int])
        return (try XCTUnwrap(entry["dtype"] as? String), try XCTUnwrap(entry["shape"] as? [Int]), offsets[0], offsets[1], key)
    }

    // MARK: Bit packing

    func testQuantizedWeightsOfEveryWidthArePackedAndReadBack() throws {
        // Odd element counts: 1, 3, 9, 15, 27, 315 (the last byte is partly padding for most widths).
        for bits in 2...8 {
            for (o, c, k) in [(1, 1, 1), (3, 1, 1), (1, 1, 3), (5, 3, 1), (3, 1, 3), (7, 5, 3)] {
                let graph = try Self.qdqConvolution(bits: bits, outputs: o, inputs: c, kernel: k)
                let data = try roundTrip(graph)
                let forms = try ModelFileTestSupport.storedForms(data)
                let count = o * c * k * k
                if count == 1 {
                    XCTAssertEqual(forms["w::q"], "fill", "one value is a constant")
                    continue
                }
                let weight = try storedTensor(of: "w::q", in: data)
                if bits < 8 {
                    XCTAssertEqual(forms["w::q"], "packed \(bits)", "\(bits) bits, \(count) values")
                    XCTAssertEqual(weight.dtype, "U8")
                    XCTAssertEqual(weight.shape, [(count * bits + 7) / 8], "\(bits) bits, \(count) values")
                } else {
                    XCTAssertEqual(forms["w::q"], "tensor", "8-bit weights in [-127, 127] need all 8 bits")
                    XCTAssertEqual(weight.dtype, "I8")
                }
                XCTAssertEqual(forms["w::q.zero_point"], "fill")
                XCTAssertEqual(forms["b::q.zero_point"], "fill")
                XCTAssertEqual(forms["x::q.scale"], "fill")
                XCTAssertEqual(forms["b::q.scale"], o > 1 ? "product" : "fill", "the bias scale is input scale × weight scale")
                XCTAssertEqual(forms["b::q"], o > 1 ? "packed 13" : "fill", "int32 bias values -2500…3500 fit 13 bits")
            }
        }
    }

    func testIntegersPackToTheNarrowestTwosComplementWidth() throws {
        var initializers: [Initializer] = []
        var expected: [String: String] = [:]
        // Both ends of each width's range, an odd count, and a value in between.
        func values(_ bits: Int) -> [Int64] {
            let low = bits == 64 ? Int64.min : -(Int64(1) << (bits - 1)), high = bits == 64 ? Int64.max : (Int64(1) << (bits - 1)) - 1
            return [low, high, 0, low / 3, high / 5]
        }
        for bits in 1...8 {
            initializers.append(Initializer(name: "i8.\(bits)", shape: [5], storage: .int8(values(bits).map { Int8($0) })))
            expected["i8.\(bits)"] = bits < 8 ? "packed \(bits)" : "tensor"
        }
        for bits in [1, 2, 9, 16, 17, 24, 31, 32] {
            initializers.append(Initializer(name: "i32.\(bits)", shape: [5, 1], storage: .int32(values(bits).map { Int32($0) })))
            expected["i32.\(bits)"] = bits < 32 ? "packed \(bits)" : "tensor"
        }
        for bits in [3, 33, 48, 63, 64] {
            initializers.append(Initializer(name: "i64.\(bits)", shape: [1, 5], storage: .int64(values(bits))))
            expected["i64.\(bits)"] = bits < 64 ? "packed \(bits)" : "tensor"
        }
        // Unsigned and float tensors are never packed; an empty one is stored as is.
        initializers.append(Initializer(name: "u8", shape: [3], storage: .uint8([0, 1, 2])))
        initializers.append(Initializer(name: "empty", shape: [0, 4], storage: .int8([])))
        expected["u8"] = "tensor"
        expected["empty"] = "tensor"
        let data = try roundTrip(Self.holding(initializers))
        XCTAssertEqual(try ModelFileTestSupport.storedForms(data), expected)
        for bits in [1, 5, 7] {
            XCTAssertEqual(try storedTensor(of: "i8.\(bits)", in: data).shape, [(5 * bits + 7) / 8])
        }
    }

    func testPackedBitOrderIsLittleEndianLowNibbleFirst() throws {
        // 4 bits: [1, -2, 7] → byte 0 = 0x1 | 0xE << 4, byte 1 = 0x7.
        let data = try roundTrip(Self.holding([Initializer(name: "w", shape: [3], storage: .int8([1, -2, 7]))]))
        let stored = try storedTensor(of: "w", in: data)
        let start = try ModelFileTestSupport.header(data).dataStart
        XCTAssertEqual(Array(data[(start + stored.begin)..<(start + stored.end)]), [0xE1, 0x07])
    }

    // MARK: Fills and products

    func testFillsReproduceEveryValueBitForBit() throws {
        var initializers: [Initializer] = []
        var fills: Set<String> = [], tensors: Set<String> = []
        func add(_ name: String, _ shape: [Int], _ storage: TensorStorage, fill: Bool) {
            initializers.append(Initializer(name: name, shape: shape, storage: storage))
            if fill { fills.insert(name) } else { tensors.insert(name) }
        }
        add("negative zero", [], .float32([-0.0]), fill: false)  // "-0" is the integer 0 to Python's json
        let special: [Float] = [0, 0.1, 1.0 / 3, 0.011901302, 1e-5, .leastNonzeroMagnitude, -.leastNormalMagnitude,
                                .greatestFiniteMagnitude, -.greatestFiniteMagnitude, .ulpOfOne, .pi, 16_777_216, 3.4028235e38]
        for (index, value) in special.enumerated() { add("special.\(index)", [], .float32([value]), fill: true) }
        // Random bit patterns: every finite one must survive the decimal in the JSON.
        var state: UInt64 = 2024
        for index in 0..<3000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: state >> 29))
            add("random.\(index)", [1], .float32([value]), fill: value.isFinite && value.bitPattern != 0x8000_0000)
        }
        add("nan", [], .float32([Float(bitPattern: 0x7fc0_1234)]), fill: false)
        add("inf", [2], .float32([.infinity, .infinity]), fill: false)
        add("vector", [2, 3], .float32([Float](repeating: -2.5, count: 6)), fill: true)
        add("almost", [3], .float32([1, 1, 1.0000001]), fill: false)
        add("zeros.i8", [96], .int8([Int8](repeating: 0, count: 96)), fill: true)
        add("zeros.i32", [96], .int32([Int32](repeating: 0, count: 96)), fill: true)
        add("min.i8", [7], .int8([Int8](repeating: -128, count: 7)), fill: true)
        add("max.u8", [3], .uint8([255, 255, 255]), fill: true)
        add("min.i32", [2], .int32([.min, .min]), fill: true)
        add("max.i64", [4], .int64([Int64](repeating: .max, count: 4)), fill: true)
        add("min.i64", [], .int64([.min]), fill: true)
        let data = try roundTrip(Self.holding(initializers))
        let forms = try ModelFileTestSupport.storedForms(data)
        for name in fills { XCTAssertEqual(forms[name], "fill", name) }
        for name in tensors { XCTAssertNotEqual(forms[name], "fill", name) }
        // Equal fills share one entry: [dtype, shape, value, [names]].
        let entries = try XCTUnwrap(try ModelFileTestSupport.graphDocument(data)["fills"] as? [[Any]])
        XCTAssertTrue(entries.contains { ($0[0] as? String) == "I8" && ($0[1] as? [Int]) == [96] && ($0[3] as? [Int])?.count == 1 })
    }

    func testBiasScalesAreStoredAsProductsOnlyWhenExact() throws {
        let weightScales = (0..<17).map { Float(0.003) * Float($0 + 1) + 0.0001 * Float($0 * $0) }
        let inputScale: Float = 0.04213
        var inexact = weightScales.map { $0 * inputScale }
        inexact[9] = inexact[9].nextUp
        let graph = Self.holding([
            Initializer(name: "in.scale", shape: [], storage: .float32([inputScale])),
            Initializer(name: "w.scale", shape: [17], storage: .float32(weightScales)),
            Initializer(name: "b.scale", shape: [17], storage: .float32(weightScales.map { $0 * inputScale })),
            Initializer(name: "c.scale", shape: [17], storage: .float32(inexact)),
            Initializer(name: "d.scale", shape: [17, 1], storage: .float32(weightScales.map { $0 * inputScale })),
        ])
        let data = try roundTrip(graph)
        let forms = try ModelFileTestSupport.storedForms(data)
        XCTAssertEqual(forms["b.scale"], "product")
        XCTAssertEqual(forms["w.scale"], "tensor")
        XCTAssertEqual(forms["c.scale"], "tensor", "one element off by one ulp: stored as it is")
        XCTAssertEqual(forms["d.scale"], "tensor", "a product has its vector's shape")
        let document = try ModelFileTestSupport.graphDocument(data)
        let names = ModelFileTestSupport.names(document)
        let product = try XCTUnwrap((document["products"] as? [[Int]])?.first)
        XCTAssertEqual(product.map { names[$0] }, ["b.scale", "w.scale", "in.scale"])
    }

    func testUnusualNamesRoundTrip() throws {
        let names = ["", "__metadata__", "0", "a\"b\\c", "日本語/重み", "🙂::q", "line\nbreak", "w", "w::q", "w::q.scale"]
        let graph = Self.holding(names.enumerated().map { index, name in
            Initializer(name: name, shape: [2], storage: .int32([Int32(index), -70_000]))
        })
        let data = try roundTrip(graph)
        XCTAssertEqual(Set(try ModelFileTestSupport.storedForms(data).keys), Set(names))
    }

    /// Random damage to a compact file (packed tensors, fills, products, front-coded names) must give a
    /// `ModelFileError` or a valid graph, never a crash.
    func testRandomDamageToCompactFilesNeverCrashes() throws {
        let original = try ModelFile.encode(try Self.qdqConvolution(bits: 3, outputs: 7, inputs: 5, kernel: 3))
        let dataStart = try ModelFileTestSupport.header(original).dataStart
        var state: UInt64 = 777
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        let replacements = Array("0123456789-,:[]{}\" .eE".utf8) + [0, 0xff]
        var errors = 0
        for _ in 0..<1000 {
            var damaged = original
            for _ in 0..<(1 + next(3)) {
                let position = next(5) == 0 ? next(damaged.count) : 8 + next(dataStart - 8)
                damaged[position] = replacements[next(replacements.count)]
            }
            do {
                _ = try ModelFile.read(data: damaged, name: "fuzz.safetensors")
            } catch let error as ModelFileError {
                errors += 1
                XCTAssertTrue(error.description.hasPrefix("fuzz.safetensors"))
            }
        }
        XCTAssertGreaterThan(errors, 700)
    }

    // MARK: Damaged, newer and older files

    func testTruncatedPackedTensorIsReportedAtItsByteOffset() throws {
        let data = try ModelFile.encode(try Self.qdqConvolution(bits: 4, outputs: 7, inputs: 5, kernel: 3))
        let weight = try storedTensor(of: "w::q", in: data)
        let start = try ModelFileTestSupport.header(data).dataStart
        XCTAssertEqual(weight.dtype, "U8")
        let truncated = data.prefix(start + (weight.begin + weight.end) / 2)
        XCTAssertThrowsError(try ModelFile.read(data: truncated, name: "cut.safetensors")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix("cut.safetensors: at byte \(start + weight.begin): tensor '\(weight.key)'"), text)
            XCTAssertTrue(text.contains("out of range"), text)
        }
    }

    /// Builds a file by hand: a format 2 graph whose one initializer `w` (I8 [5], 4 bits) is held by tensor
    /// "0" of `storedBytes` bytes.
    func handWrittenPackedFile(storedBytes: Int, bits: Int = 4, version: String = "2") -> Data {
        let graph = #"{"name":"g","inputs":[[1,"F32",[1]]],"outputs":[[1,"F32",[1]]],"kinds":[],"suffixes":[],"names":["w","x"],"# +
            #""nodes":[],"tensors":[[0,"I8",[5],\#(bits)]],"fills":[],"products":[],"valueInfo":"inferred","metadata":{}}"#
        let escaped = graph.replacingOccurrences(of: "\"", with: "\\\"")
        let header = #"{"__metadata__":{"format":"qatflow","qatflow.version":"\#(version)","qatflow.graph":"\#(escaped)"},"# +
            #""0":{"dtype":"U8","shape":[\#(storedBytes)],"data_offsets":[0,\#(storedBytes)]}}"#
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(Data(header.utf8))
        bytes.append(contentsOf: [UInt8](repeating: 0x21, count: storedBytes))
        return bytes
    }

    func testPackedTensorOfTheWrongSizeIsReportedAtItsByteOffset() throws {
        let good = handWrittenPackedFile(storedBytes: 3)
        let graph = try ModelFile.read(data: good, name: "hand.safetensors")
        XCTAssertEqual(graph.initializers["w"]?.storage, .int8([1, 2, 1, 2, 1]), "0x21 = nibbles 1, 2")
        let short = handWrittenPackedFile(storedBytes: 2)
        let start = try ModelFileTestSupport.header(short).dataStart
        XCTAssertThrowsError(try ModelFile.read(data: short, name: "hand.safetensors")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.hasPrefix("hand.safetensors: at byte \(start): "), text)
            XCTAssertTrue(text.contains("4-bit packed I8 [5] needs a U8 [3] tensor, but tensor '0' is U8 [2]"), text)
        }
        XCTAssertThrowsError(try ModelFile.read(data: handWrittenPackedFile(storedBytes: 8, bits: 8), name: "hand.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("expected 1…7 bits per value, got 8"), "\(error)")
        }
    }

    func testNewerOrUnknownFormatVersionIsRejectedClearly() throws {
        XCTAssertThrowsError(try ModelFile.read(data: handWrittenPackedFile(storedBytes: 3, version: "3"), name: "new.safetensors")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("at byte 8: qatflow.version 3 is newer than this qatflow reads"), text)
            XCTAssertTrue(text.contains("update qatflow"), text)
        }
        XCTAssertThrowsError(try ModelFile.read(data: handWrittenPackedFile(storedBytes: 3, version: "beta"), name: "odd.safetensors")) { error in
            XCTAssertTrue("\(error)".contains("qatflow.version beta is not a qatflow format version"), "\(error)")
        }
    }

    /// Files written before format 2 (one plain tensor per initializer, under its own name; the graph as
    /// objects) still load: users' caches hold them.
    func testFormat1FilesStillLoad() throws {
        let graph = try GraphFixtures.network().validated()
        func attribute(_ value: AttributeValue) -> Any {
            func number(_ x: Float) -> Any { x.isFinite ? Double(x) : (x > 0 ? "inf" : x < 0 ? "-inf" : "nan") }
            switch value {
            case .int(let v): return ["i": v]
            case .float(let v): return ["f": number(v)]
            case .ints(let v): return ["ints": v]
            case .floats(let v): return ["floats": v.map(number)]
            case .string(let v): return ["s": v]
            }
        }
        func info(_ value: ValueInfo) -> Any { ["name": value.name, "dataType": value.dataType.rawValue, "shape": value.shape] }
        let document: [String: Any] = [
            "name": graph.name, "inputs": graph.inputs.map(info), "outputs": graph.outputs.map(info),
            "nodes": graph.nodes.map { ["name": $0.name, "op": $0.op.rawValue, "inputs": $0.inputs, "outputs": $0.outputs,
                                        "attributes": $0.attributes.mapValues(attribute)] },
            "initializers": graph.initializers.keys.sorted().map { ["name": $0, "tensor": $0] },
            "valueInfo": graph.valueInfo.keys.sorted().map { info(graph.valueInfo[$0]!) },
            "metadata": graph.metadata,
        ]
        let graphJSON = String(decoding: try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys]), as: UTF8.self)
        var header: [String: Any] = ["__metadata__": ["format": "qatflow", "qatflow.version": "1", "qatflow.graph": graphJSON]]
        var buffer = Data()
        let dtypes: [DataType: String] = [.float32: "F32", .int8: "I8", .uint8: "U8", .int32: "I32", .int64: "I64"]
        for name in graph.initializers.keys.sorted() {
            let initializer = graph.initializers[name]!
            var bytes = Data()
            for pattern in ModelFileTestSupport.bitPatterns(initializer.storage) {
                let size = initializer.storage.dataType == .float32 || initializer.storage.dataType == .int32 ? 4
                    : initializer.storage.dataType == .int64 ? 8 : 1
                withUnsafeBytes(of: pattern.littleEndian) { bytes.append(contentsOf: $0.prefix(size)) }
            }
            header[name] = ["dtype": dtypes[initializer.storage.dataType]!, "shape": initializer.shape,
                            "data_offsets": [buffer.count, buffer.count + bytes.count]]
            buffer.append(bytes)
        }
        let headerBytes = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        var file = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { file.append(contentsOf: $0) }
        file.append(headerBytes)
        file.append(buffer)
        let read = try ModelFile.read(data: file, name: "old.safetensors")
        ModelFileTestSupport.assertIdentical(read, graph)
        ModelFileTestSupport.assertIdentical(try ModelFile.read(data: ModelFile.encode(read), name: "new.safetensors"), graph)
    }

    // MARK: Python

    /// The reference `safetensors` package opens a file with packed tensors (they are U8 bytes to it), and a
    /// numpy reader written from the format's description rebuilds every initializer bit for bit.
    func testPythonSafetensorsOpensPackedFiles() throws {
        var initializers: [String: Initializer] = [:]
        for bits in 2...8 {
            let graph = try Self.qdqConvolution(bits: bits, outputs: 7, inputs: 5, kernel: 3)
            for (name, initializer) in graph.initializers {
                initializers["\(bits)/\(name)"] = Initializer(name: "\(bits)/\(name)", shape: initializer.shape, storage: initializer.storage)
            }
        }
        initializers["wide"] = Initializer(name: "wide", shape: [3], storage: .int64([-5_000_000_000, 42, Int64.max >> 1]))
        initializers["negative zero"] = Initializer(name: "negative zero", shape: [2], storage: .float32([-0.0, -0.0]))
        let graph = Self.holding(Array(initializers.values))
        let url = directory.appendingPathComponent("packed.safetensors")
        try ModelFile.write(graph, to: url)
        let stored = try ModelFileTestSupport.assertPythonReads(url, as: graph)
        let data = try Data(contentsOf: url)
        for bits in 2...7 {
            let tensor = try storedTensor(of: "\(bits)/w::q", in: data)
            XCTAssertEqual(stored[tensor.key]?.0, "uint8")
            XCTAssertEqual(stored[tensor.key]?.1, [(315 * bits + 7) / 8])
        }
    }
}
