import Foundation
import Graph
import ONNX
import XCTest

/// Unsupported ops and attribute values, truncated and garbage files: always an `ONNXImportError` with a message
/// that says where and why, never a crash.
final class ONNXImportErrorTests: XCTestCase {
    func testUnsupportedOperatorNamesOpNodeAndOpset() throws {
        let lstm = try ONNXTestCases.shared().named("lstm")
        let message = try importFailure(URL(fileURLWithPath: lstm.file))
        print("LSTM model error: \(message)")
        for expected in ["lstm.onnx", "LSTM", "encoder_lstm", "opset 14", "Supported operators: Conv"] {
            XCTAssertTrue(message.contains(expected), "expected '\(expected)' in: \(message)")
        }
    }

    /// Every generated error model (dilations, auto_pad SAME_UPPER, reflect Pad, opset 10, LSTM) is rejected with
    /// the substrings the script lists.
    func testUnsupportedAttributeValuesAreRejectedWithNodeName() throws {
        let fixture = try ONNXTestCases.shared()
        XCTAssertGreaterThanOrEqual(fixture.errorModels.count, 5)
        for model in fixture.errorModels {
            let message = try importFailure(URL(fileURLWithPath: model.file))
            print("\(model.name): \(message)")
            for expected in model.expect ?? [] {
                XCTAssertTrue(message.contains(expected), "\(model.name): expected '\(expected)' in: \(message)")
            }
        }
    }

    func testTruncatedFileReportsFileAndByteOffset() throws {
        let original = try Data(contentsOf: TestPaths.pytorchModel)
        let directory = try ONNXTestCases.shared().directory.appendingPathComponent("truncated")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // Cut inside the header fields, inside the graph (node list, initializers) and just before the end.
        let cuts = [0, 1, 2, 7, 30, 100, 1_000, 50_000, original.count / 2, original.count - 1_000, original.count - 10, original.count - 1]
        for cut in cuts {
            let url = directory.appendingPathComponent("mobilenetv2-cut-\(cut).onnx")
            try original.prefix(cut).write(to: url)
            let message = try importFailure(url)
            print("cut at \(cut): \(message)")
            XCTAssertTrue(message.contains(url.lastPathComponent), "file name missing: \(message)")
            XCTAssertTrue(message.contains("byte"), "byte offset missing: \(message)")
        }
    }

    /// Many more cut points through the in-memory API: no crash, always an error naming bytes.
    func testEveryTruncationIsAnErrorNotACrash() throws {
        let original = try Data(contentsOf: TestPaths.pytorchModel)
        var generator = SplitMix64(seed: 7)
        for _ in 0..<200 {
            let cut = Int(generator.next() % UInt64(original.count))
            do {
                _ = try ONNXImporter.importModel(data: original.prefix(cut), name: "cut.onnx", forTraining: true)
                XCTFail("cut at \(cut) imported without error")
            } catch let error as ONNXImportError {
                XCTAssertTrue(error.description.hasPrefix("cut.onnx: "), "\(error)")
                XCTAssertTrue(error.description.contains("byte"), "cut at \(cut): \(error)")
            }
        }
    }

    func testGarbageBytesAreRejected() throws {
        var generator = SplitMix64(seed: 42)
        var inputs: [Data] = [Data(), Data(repeating: 0, count: 64), Data("this is not an onnx model\n".utf8),
                              Data([0x08, 0x07, 0x12, 0xff, 0xff, 0xff, 0xff, 0x0f])]
        for size in [1, 3, 16, 100, 1_000, 100_000] {
            inputs.append(Data((0..<size).map { _ in UInt8(truncatingIfNeeded: generator.next()) }))
        }
        for (index, data) in inputs.enumerated() {
            do {
                let graph = try ONNXImporter.importModel(data: data, name: "garbage-\(index).onnx", forTraining: true)
                XCTFail("garbage input \(index) (\(data.count) bytes) imported as a graph with \(graph.nodes.count) nodes")
            } catch let error as ONNXImportError {
                print("garbage \(index) (\(data.count) bytes): \(error)")
                XCTAssertTrue(error.description.hasPrefix("garbage-\(index).onnx: "), "\(error)")
            }
        }
    }

    /// Flipped bytes inside the weights decode (the floats are just different); flipped bytes in the structure
    /// must give an error, not a crash. Either outcome is acceptable; a crash fails the whole run.
    func testCorruptedBytesNeverCrash() throws {
        let original = try Data(contentsOf: TestPaths.pytorchModel)
        var generator = SplitMix64(seed: 99)
        var rejected = 0
        for _ in 0..<100 {
            var corrupted = original
            let position = Int(generator.next() % UInt64(original.count))
            corrupted[position] ^= UInt8(truncatingIfNeeded: generator.next() | 1)
            do {
                _ = try ONNXImporter.importModel(data: corrupted, name: "flipped.onnx", forTraining: false)
            } catch is ONNXImportError {
                rejected += 1
            } catch {
                // Errors from later stages (e.g. BN folding on a corrupted shape) are errors too, not crashes.
                rejected += 1
            }
        }
        print("byte flips: \(rejected) of 100 rejected, the rest decoded")
    }

    /// Every byte of a small model with nodes, attributes, Constant tensors and a shape chain, corrupted in turn:
    /// sizes, attribute values and tags all get hit, and none may trap (overflow, out-of-range index).
    func testEveryByteOfASmallModelCorruptedNeverCrashes() throws {
        let original = try Data(contentsOf: URL(fileURLWithPath: try ONNXTestCases.shared().named("mixed_pytorch_style").file))
        var generator = SplitMix64(seed: 5)
        var outcomes = (imported: 0, rejected: 0)
        for position in 0..<original.count {
            for flip: UInt8 in [0xff, UInt8(truncatingIfNeeded: generator.next() | 1)] {
                var corrupted = original
                corrupted[position] ^= flip
                for forTraining in [true, false] {
                    do {
                        _ = try ONNXImporter.importModel(data: corrupted, name: "flipped.onnx", forTraining: forTraining)
                        outcomes.imported += 1
                    } catch {
                        outcomes.rejected += 1
                    }
                }
            }
        }
        print("small-model byte corruption (\(original.count) bytes × 2 flips × 2 forms): \(outcomes.rejected) rejected, \(outcomes.imported) imported")
    }

    func testMissingFileIsAnImportError() {
        XCTAssertThrowsError(try ONNXImporter.importModel(at: URL(fileURLWithPath: "/nonexistent/model.onnx"), forTraining: true)) { error in
            XCTAssertTrue("\(error)".contains("/nonexistent/model.onnx"), "\(error)")
        }
    }

    private func importFailure(_ url: URL, file: StaticString = #filePath, line: UInt = #line) throws -> String {
        do {
            let graph = try ONNXImporter.importModel(at: url, forTraining: true)
            XCTFail("\(url.lastPathComponent) imported (\(graph.nodes.count) nodes) but should have failed", file: file, line: line)
            return ""
        } catch let error as ONNXImportError {
            return error.description
        }
    }
}

/// A tiny deterministic generator so failures reproduce (SplitMix64, public domain).
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
