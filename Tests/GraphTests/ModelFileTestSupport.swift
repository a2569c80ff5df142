import Foundation
import Graph
import XCTest

/// Helpers shared by the model file tests: the file's header, bitwise graph comparison, and Python.
enum ModelFileTestSupport {
    /// The JSON header (as parsed) and the byte where tensor data starts.
    static func header(_ data: Data) throws -> (json: [String: Any], dataStart: Int, text: String) {
        let length = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        let bytes = data.subdata(in: 8..<(8 + length))
        let json = try XCTUnwrap(JSONSerialization.jsonObject(with: bytes) as? [String: Any])
        return (json, 8 + length, String(decoding: bytes, as: UTF8.self))
    }

    /// The parsed `qatflow.graph` document.
    static func graphDocument(_ data: Data) throws -> [String: Any] {
        let metadata = try XCTUnwrap(try header(data).json["__metadata__"] as? [String: String])
        let graph = try XCTUnwrap(metadata["qatflow.graph"])
        return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(graph.utf8)) as? [String: Any])
    }

    /// The names of a format 2 document, decoded from its front-coded `names` list.
    static func names(_ document: [String: Any]) -> [String] {
        let suffixes = document["suffixes"] as? [String] ?? []
        var names: [String] = [], previous: [Unicode.Scalar] = []
        for entry in document["names"] as? [Any] ?? [] {
            var scalars: [Unicode.Scalar] = []
            if let text = entry as? String {
                scalars = Array(text.unicodeScalars)
            } else if let pair = entry as? [Any], pair.count == 2, let shared = pair[0] as? Int {
                let suffix = (pair[1] as? String) ?? (pair[1] as? Int).map { suffixes[$0] } ?? ""
                scalars = Array(previous.prefix(shared)) + Array(suffix.unicodeScalars)
            }
            var view = String.UnicodeScalarView()
            view.append(contentsOf: scalars)
            names.append(String(view))
            previous = scalars
        }
        return names
    }

    /// How the file stores each initializer: "tensor", "packed N" (N bits), "fill" or "product".
    static func storedForms(_ data: Data) throws -> [String: String] {
        let document = try graphDocument(data)
        let names = names(document)
        var forms: [String: String] = [:]
        for entry in document["tensors"] as? [[Any]] ?? [] {
            forms[names[entry[0] as! Int]] = entry.count == 4 ? "packed \(entry[3] as! Int)" : "tensor"
        }
        for entry in document["fills"] as? [[Any]] ?? [] {
            for index in entry[3] as? [Int] ?? [] { forms[names[index]] = "fill" }
        }
        for entry in document["products"] as? [[Any]] ?? [] { forms[names[entry[0] as! Int]] = "product" }
        return forms
    }

    /// The values as 64-bit patterns (Float32 by its bits), so that −0, NaN payloads and ±inf compare exactly.
    static func bitPatterns(_ storage: TensorStorage) -> [Int64] {
        switch storage {
        case .float32(let values): return values.map { Int64($0.bitPattern) }
        case .int8(let values): return values.map(Int64.init)
        case .uint8(let values): return values.map(Int64.init)
        case .int32(let values): return values.map(Int64.init)
        case .int64(let values): return values
        }
    }

    /// `Graph ==` compares Floats by value (−0 == 0, NaN != NaN); this compares initializers bit for bit.
    static func assertIdentical(_ read: Graph, _ written: Graph, file: StaticString = #filePath, line: UInt = #line) {
        var a = read, b = written
        XCTAssertEqual(Set(a.initializers.keys), Set(b.initializers.keys), file: file, line: line)
        for (name, initializer) in b.initializers {
            guard let other = a.initializers[name] else { continue }
            XCTAssertEqual(other.shape, initializer.shape, name, file: file, line: line)
            XCTAssertEqual(other.storage.dataType, initializer.storage.dataType, name, file: file, line: line)
            XCTAssertEqual(bitPatterns(other.storage), bitPatterns(initializer.storage), name, file: file, line: line)
        }
        a.initializers = [:]
        b.initializers = [:]
        XCTAssertEqual(a, b, file: file, line: line)
    }

    /// The venv Python (`QATFLOW_PYTHON`, else the repository's `.venv`).
    static var python: URL {
        if let path = ProcessInfo.processInfo.environment["QATFLOW_PYTHON"] { return URL(fileURLWithPath: path) }
        return URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".venv/bin/python")
    }

    /// Runs a Python script and returns its standard output parsed as JSON.
    static func runPython(_ script: String, arguments: [String]) throws -> Any {
        let process = Process()
        process.executableURL = python
        process.arguments = ["-c", script] + arguments
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        let output = stdout.fileHandleForReading.readDataToEndOfFile()
        let errors = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw PythonFailure(message: String(decoding: errors, as: UTF8.self))
        }
        return try JSONSerialization.jsonObject(with: output)
    }

    struct PythonFailure: Error, CustomStringConvertible {
        var message: String
        var description: String { "python failed: \(message)" }
    }

    /// A reader of format 2 written from docs/ARCHITECTURE.md with numpy and the reference `safetensors`
    /// package: prints every initializer as {name: {dtype, shape, bits: [64-bit patterns]}} plus the dtype and
    /// shape of every stored safetensors tensor.
    static let pythonReader = """
        import json, sys
        import numpy as np
        from safetensors.numpy import load_file
        from safetensors import safe_open
        path = sys.argv[1]
        tensors = load_file(path)
        with safe_open(path, framework="np") as f:
            meta = f.metadata()
        assert meta["format"] == "qatflow" and meta["qatflow.version"] == "2", meta.get("qatflow.version")
        g = json.loads(meta["qatflow.graph"])
        names, previous = [], ""
        for entry in g["names"]:
            if isinstance(entry, str):
                name = entry
            else:
                shared, suffix = entry
                name = previous[:shared] + (g["suffixes"][suffix] if isinstance(suffix, int) else suffix)
            names.append(name)
            previous = name
        types = {"F32": np.float32, "I8": np.int8, "U8": np.uint8, "I32": np.int32, "I64": np.int64}
        values = {}
        for entry in g["tensors"]:
            index, dtype, shape = entry[:3]
            stored = tensors[str(index)]
            if len(entry) == 4:
                b, count = entry[3], int(np.prod(shape, dtype=np.int64))
                assert stored.dtype == np.uint8 and stored.shape == ((count * b + 7) // 8,)
                bits = np.unpackbits(stored, bitorder="little")[:count * b].reshape(count, b).astype(np.int64)
                v = (bits << np.arange(b, dtype=np.int64)).sum(axis=1)
                v = np.where(v >= (1 << (b - 1)), v + np.int64(-(1 << b)), v)
                values[names[index]] = v.astype(types[dtype]).reshape(shape)
            else:
                assert stored.dtype == types[dtype] and list(stored.shape) == shape
                values[names[index]] = stored
        for dtype, shape, value, indices in g["fills"]:
            for index in indices:
                values[names[index]] = np.full(shape, value, dtype=types[dtype])
        for index, vector, scalar in g["products"]:
            values[names[index]] = (values[names[vector]] * values[names[scalar]].reshape(-1)[0]).astype(np.float32)
        def patterns(a):
            flat = a.reshape(-1)
            return (flat.view(np.uint32) if a.dtype == np.float32 else flat).astype(np.int64).tolist()
        print(json.dumps({
            "initializers": {name: {"dtype": str(a.dtype), "shape": list(a.shape), "bits": patterns(a)} for name, a in values.items()},
            "stored": {name: {"dtype": str(t.dtype), "shape": list(t.shape)} for name, t in tensors.items()},
        }))
        """

    /// Reads `url` with `pythonReader` and checks every initializer against `graph` bit for bit; returns what
    /// Python saw as stored tensors (name → (dtype, shape)).
    @discardableResult
    static func assertPythonReads(_ url: URL, as graph: Graph, file: StaticString = #filePath, line: UInt = #line) throws -> [String: (String, [Int])] {
        guard FileManager.default.isExecutableFile(atPath: python.path) else {
            XCTFail("no Python at \(python.path): run `make venv` or set QATFLOW_PYTHON", file: file, line: line)
            return [:]
        }
        let result = try XCTUnwrap(try runPython(pythonReader, arguments: [url.path]) as? [String: Any], file: file, line: line)
        let initializers = try XCTUnwrap(result["initializers"] as? [String: [String: Any]], file: file, line: line)
        XCTAssertEqual(Set(initializers.keys), Set(graph.initializers.keys), file: file, line: line)
        let numpyTypes: [DataType: String] = [.float32: "float32", .int8: "int8", .uint8: "uint8", .int32: "int32", .int64: "int64"]
        for (name, initializer) in graph.initializers {
            guard let seen = initializers[name] else { continue }
            XCTAssertEqual(seen["dtype"] as? String, numpyTypes[initializer.storage.dataType], name, file: file, line: line)
            XCTAssertEqual(seen["shape"] as? [Int], initializer.shape, name, file: file, line: line)
            let bits = (seen["bits"] as? [NSNumber])?.map(\.int64Value)
            XCTAssertEqual(bits, bitPatterns(initializer.storage), name, file: file, line: line)
        }
        let stored = try XCTUnwrap(result["stored"] as? [String: [String: Any]], file: file, line: line)
        return stored.mapValues { ($0["dtype"] as? String ?? "?", $0["shape"] as? [Int] ?? []) }
    }
}
