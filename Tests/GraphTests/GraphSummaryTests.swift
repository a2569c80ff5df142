import Graph
import XCTest

final class GraphSummaryTests: XCTestCase {
    func testRowsCountsAndText() throws {
        let summary = try GraphSummary(graph: GraphFixtures.network(), fileSize: 5_559)
        let conv = try XCTUnwrap(summary.rows.first { $0.name == "conv" })
        XCTAssertEqual(conv.outputShape, [-1, 8, 14, 14])
        XCTAssertEqual(conv.parameters, 8 * 3 * 9 + 8)
        XCTAssertEqual(conv.multiplyAccumulates, 8 * 14 * 14 * 3 * 9)
        let dw = try XCTUnwrap(summary.rows.first { $0.name == "dw" })
        XCTAssertEqual(dw.multiplyAccumulates, 8 * 14 * 14 * 1 * 9)
        XCTAssertEqual(summary.rows.first { $0.name == "pw" }?.multiplyAccumulates, 8 * 14 * 14 * 8)
        XCTAssertEqual(summary.rows.first { $0.name == "fc" }?.multiplyAccumulates, 10 * 8)
        XCTAssertEqual(summary.rows.first { $0.name == "bn" }?.parameters, 16, "scale and bias; running statistics excluded")
        XCTAssertEqual(summary.rows.first { $0.name == "q" }?.parameters, 0)
        XCTAssertEqual(summary.rows.first { $0.name == "add" }?.multiplyAccumulates, 0)
        let expectedMACs = 8 * 14 * 14 * 27 + 8 * 14 * 14 * 9 + 8 * 14 * 14 * 8 + 80
        XCTAssertEqual(summary.totalMultiplyAccumulates, expectedMACs)
        let text = summary.text
        XCTAssertTrue(text.contains("[N, 8, 14, 14]"), text)
        XCTAssertTrue(text.contains("MACs: \(GraphSummary.formatOperations(expectedMACs)) per image"), text)
        XCTAssertTrue(text.contains("file size: 5.6 kB (5559 bytes)"), text)
        XCTAssertEqual(text.split(separator: "\n").filter { $0.hasPrefix("conv ") }.count, 1, text)
    }

    func testFormatting() {
        XCTAssertEqual(GraphSummary.formatParameters(700_000), "0.70 M")
        XCTAssertEqual(GraphSummary.formatParameters(3_504_872), "3.50 M")
        XCTAssertEqual(GraphSummary.formatOperations(27_700_000), "27.7 M")
        XCTAssertEqual(GraphSummary.formatOperations(300_000_000), "300 M")
        XCTAssertEqual(GraphSummary.formatOperations(1_234), "1.23 K")
        XCTAssertEqual(GraphSummary.formatOperations(999), "999")
    }
}
