import Foundation
import Graph
import XCTest

final class ModelFileTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("qatflow-modelfile-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    func testRoundTripKeepsGraphEqual() throws {
        for graph in [GraphFixtures.network(), try GraphFixtures.network().validated()] {
            let url = directory.appendingPathComponent("model.safetensors")
            try ModelFile.write(graph, to: url)
            XCTAssertEqual(try ModelFile.read(url), graph)
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        XCTAssertEqual(leftovers, ["model.safetensors"], "no temporary files are left behind")
    }

    func testHeaderLayout() throws {
        let data = try ModelFile.encode(GraphFixtures.network())
        let (header, dataStart, text) = try ModelFileTestSupport.header(data)
        XCTAssertEqual(dataStart % 8, 0, "tensor data starts 8-byte aligned")
        // `head -c` shows the qatflow keys first, then the graph's name, inputs and ops.
        XCTAssertTrue(text.hasPrefix(#"{"__metadata__":{"format":"qatflow","qatflow.version":"2","qatflow.graph":"{\"name\":\"fixture\",\"inputs\":"#),
                      String(text.prefix(200)))
        let metadata = try XCTUnwrap(header["__metadata__"] as? [String: String])
        XCTAssertEqual(metadata["format"], "qatflow")
        XCTAssertEqual(metadata["qatflow.version"], ModelFile.formatVersion)
        let document = try ModelFileTestSupport.graphDocument(data)
        XCTAssertEqual((document["valueInfo"] as? [Any])?.count, 0, "a graph without value types lists none")
        let validated = try ModelFileTestSupport.graphDocument(ModelFile.encode(GraphFixtures.network().validated()))
        XCTAssertEqual(validated["valueInfo"] as? String, "inferred", "inferred value types are recomputed, not stored")
        // The int64 initializer needs 34 bits: a packed U8 tensor.
        let tensors = try XCTUnwrap(document["tensors"] as? [[Any]])
        XCTAssertTrue(tensors.contains { $0.count == 4 && $0[1] as? String == "I64" && $0[3] as? Int == 34 }, "\(tensors)")
    }

    /// Python's safetensors (the reference reader) must open the file, and a reader written from the format's
    /// description must see the same initializers.
    func testPythonSafetensorsReadsTheFile() throws {
        let graph = GraphFixtures.network()
        let url = directory.appendingPathComponent("model.safetensors")
        try ModelFile.write(graph, to: url)
        let stored = try ModelFileTestSupport.assertPythonReads(url, as: graph)
        XCTAssertFalse(stored.isEmpty)
    }

    func expectError(_ data: Data, containing fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try ModelFile.read(data: data, name: "broken.safetensors"), file: file, line: line) { error in
            guard let error = error as? ModelFileError else { return XCTFail("not a ModelFileError: \(error)", file: file, line: line) }
            let text = error.description
            XCTAssertTrue(text.hasPrefix("broken.safetensors"), text, file: file, line: line)
            for fragment in fragments { XCTAssertTrue(text.contains(fragment), "\(text) lacks \(fragment)", file: file, line: line) }
        }
    }

    func testTruncatedFilesGiveErrorsNotCrashes() throws {
        let data = try ModelFile.encode(GraphFixtures.network())
        let headerLength = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var offsets = [0, 1, 7, 8, 9, 20, 8 + headerLength / 2, 8 + headerLength - 1, 8 + headerLength, 8 + headerLength + 1, data.count - 1]
        offsets += stride(from: 0, to: data.count, by: max(1, data.count / 40)).map { $0 }
        for offset in offsets {
            XCTAssertThrowsError(try ModelFile.read(data: data.prefix(offset), name: "broken.safetensors"), "truncated at \(offset)") { error in
                XCTAssertTrue(error is ModelFileError, "truncated at \(offset): \(error)")
                XCTAssertTrue("\(error)".contains("at byte"), "truncated at \(offset): \(error)")
            }
        }
        expectError(data.prefix(5), containing: ["at byte 0", "8-byte"])
        expectError(data.prefix(8 + headerLength), containing: ["out of range"])
        expectError(data + Data([1, 2, 3]), containing: ["3 more bytes"])
    }

    /// Builds a file from a hand-written header and buffer.
    func file(header: String, buffer: [UInt8] = []) -> Data {
        var bytes = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { bytes.append(contentsOf: $0) }
        bytes.append(Data(header.utf8))
        bytes.append(contentsOf: buffer)
        return bytes
    }

    func testCorruptedHeadersAreRejectedWithOffsets() throws {
        var hugeLength = try ModelFile.encode(GraphFixtures.network())
        hugeLength.replaceSubrange(0..<8, with: [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f])
        expectError(hugeLength, containing: ["at byte 0", "header length"])
        expectError(file(header: "{not json"), containing: ["at byte 8", "JSON"])
        expectError(file(header: "[1, 2]"), containing: ["JSON object"])
        expectError(file(header: #"{"a": {"dtype": "F16", "shape": [1], "data_offsets": [0, 2]}}"#, buffer: [0, 0]), containing: ["dtype"])
        expectError(file(header: #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, buffer: [0, 0, 0, 0]),
                    containing: ["needs 2 × 4 bytes"])
        expectError(file(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 8]}}"#, buffer: [0, 0, 0, 0]),
                    containing: ["out of range"])
        expectError(file(header: #"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}"#,
                         buffer: [UInt8](repeating: 0, count: 6)), containing: ["overlaps"])
        expectError(file(header: #"{"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}"#, buffer: [0, 0, 0, 0]), containing: ["shape"])
        expectError(file(header: #"{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}"#, buffer: [0, 0, 0, 0]),
                    containing: ["format", "qatflow"])
        expectError(file(header: #"{"__metadata__": {"format": "qatflow", "qatflow.version": "1"}}"#), containing: ["qatflow.graph"])
        expectError(file(header: #"{"__metadata__": {"format": "qatflow", "qatflow.version": "1", "qatflow.graph": "{]"}}"#),
                    containing: ["qatflow.graph"])
    }

    func testUnknownOpAndBrokenGraphAreRejected() throws {
        let original = try ModelFile.encode(GraphFixtures.network())
        // Same-length substitutions inside the header keep the header length valid.
        func replacing(_ old: String, with new: String) throws -> Data {
            XCTAssertEqual(old.utf8.count, new.utf8.count)
            var data = original
            let range = try XCTUnwrap(data.range(of: Data(old.utf8)), "\(old) not in header")
            data.replaceSubrange(range, with: Data(new.utf8))
            return data
        }
        expectError(try replacing(#"[\"Clip\""#, with: #"[\"Clop\""#), containing: ["unknown op 'Clop'", "relu6"])
        // A tensor the graph lists but the file lacks (the first tensor of the table renamed).
        let (_, _, text) = try ModelFileTestSupport.header(original)
        let firstTensor = try XCTUnwrap(text.range(of: #"\},"[0-9]+":\{"#, options: .regularExpression))
        let key = String(text[firstTensor].dropFirst(3).dropLast(3))
        expectError(try replacing("\"\(key)\":{\"dtype\"", with: "\"\(String(repeating: "x", count: key.count))\":{\"dtype\""),
                    containing: ["expected safetensors tensor '\(key)'", "does not contain"])

        var broken = GraphFixtures.network()
        let add = try XCTUnwrap(broken.nodes.firstIndex { $0.name == "add" })
        broken.nodes[add].inputs = ["r", "q"]
        expectError(try ModelFile.encode(broken), containing: ["'add' (Add)"])
    }

    func testReadingMissingFileNamesIt() {
        let url = directory.appendingPathComponent("absent.safetensors")
        XCTAssertThrowsError(try ModelFile.read(url)) { error in XCTAssertTrue("\(error)".contains("absent.safetensors"), "\(error)") }
    }
}
