import Foundation
import Graph
import XCTest

/// Random damage to a valid file must give a `ModelFileError` (or, rarely, a still-valid graph), never a crash.
final class ModelFileFuzzTests: XCTestCase {
    func testRandomByteDamageNeverCrashes() throws {
        let original = try ModelFile.encode(GraphFixtures.network())
        let headerLength = original.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
        var state: UInt64 = 12345
        func next(_ bound: Int) -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int((state >> 33) % UInt64(bound))
        }
        // Characters that keep JSON plausible make the damage reach the deeper validation layers.
        let replacements = Array("0123456789-,:[]{}\" .eE".utf8) + [0, 0xff]
        var errors = 0
        for _ in 0..<400 {
            var damaged = original
            for _ in 0..<(1 + next(3)) {
                // Mostly the header (where the structure is), sometimes the length or the data.
                let position = next(4) == 0 ? next(damaged.count) : 8 + next(headerLength)
                damaged[position] = replacements[next(replacements.count)]
            }
            do {
                _ = try ModelFile.read(data: damaged, name: "fuzz.safetensors")
            } catch let error as ModelFileError {
                errors += 1
                XCTAssertTrue(error.description.hasPrefix("fuzz.safetensors"))
            }
        }
        XCTAssertGreaterThan(errors, 300)
    }

    func testAbsurdSizesAreRejectedNotTrapped() throws {
        var graph = GraphFixtures.network()
        graph.inputs[0].shape = [-1, 3, 1 << 40, 1 << 40]
        XCTAssertThrowsError(try graph.validated())
        graph = GraphFixtures.network()
        graph.nodes[0].attributes["pads"] = .ints([Int.max, 0, 0, 0])
        XCTAssertThrowsError(try graph.validated())
        graph = GraphFixtures.network()
        graph.nodes.insert(Node(name: "reshape", op: .reshape, inputs: ["input"], outputs: ["big"],
                                attributes: ["shape": .ints([0, 1 << 31, 1 << 31, 1 << 31, -1])]), at: 0)
        XCTAssertThrowsError(try graph.validated())
    }
}
