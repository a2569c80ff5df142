import Datasets
import Foundation
import XCTest

final class DatasetSpecTests: XCTestCase {
    func testDefaultsComeFromTheDataset() throws {
        let fashion = try DatasetSpec(name: "fashion-mnist", split: .test)
        XCTAssertEqual(fashion.mean, [0.2860])
        XCTAssertEqual(fashion.std, [0.3530])
        XCTAssertEqual(fashion.pad, 2)
        XCTAssertNil(fashion.limit)
        XCTAssertNil(fashion.root)
        let mnist = try DatasetSpec(name: "mnist", split: .train, limit: 5, pad: 0, mean: nil, std: 0.5)
        XCTAssertEqual(mnist.mean, [0.1307])
        XCTAssertEqual(mnist.std, [0.5])
        XCTAssertEqual(mnist.limit, 5)
        XCTAssertEqual(mnist.pad, 0)
        XCTAssertEqual(DatasetSpec.knownNames, ["fashion-mnist", "mnist"])
        XCTAssertEqual(fashion.classNames.count, 10)
        XCTAssertEqual(fashion.classNames.last, "Ankle boot")
        XCTAssertEqual(mnist.classNames, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])
    }

    func testUnknownNameListsKnownNames() {
        let message = errorDescription { _ = try DatasetSpec(name: "cifar", split: .test) }
        XCTAssertTrue(message.contains("cifar"), message)
        XCTAssertTrue(message.contains("fashion-mnist") && message.contains("mnist"), message)
    }

    func testInvalidFieldsAreRejected() {
        XCTAssertTrue(errorDescription { _ = try DatasetSpec(name: "mnist", split: .test, limit: 0) }.contains("limit"))
        XCTAssertTrue(errorDescription { _ = try DatasetSpec(name: "mnist", split: .test, pad: -1) }.contains("pad"))
        XCTAssertTrue(errorDescription { _ = try DatasetSpec(name: "mnist", split: .test, std: 0) }.contains("std"))
    }

    func testShorthandParses() throws {
        XCTAssertEqual(try DatasetSpec(shorthand: "fashion-mnist:test"),
                       try DatasetSpec(name: "fashion-mnist", split: .test))
        XCTAssertEqual(try DatasetSpec(shorthand: "mnist:train"), try DatasetSpec(name: "mnist", split: .train))
        XCTAssertEqual(try DatasetSpec(shorthand: " mnist : train ").split, .train)
    }

    func testShorthandErrorsExplainTheForm() {
        for bad in ["fashion-mnist", "fashion-mnist:", ":test", "fashion-mnist:test:extra", "", "a:b"] {
            let message = errorDescription { _ = try DatasetSpec(shorthand: bad) }
            XCTAssertTrue(message.contains("NAME:SPLIT"), "\(bad): \(message)")
            XCTAssertTrue(message.contains("fashion-mnist") && message.contains("train") && message.contains("test"),
                          "\(bad): \(message)")
        }
        XCTAssertTrue(errorDescription { _ = try DatasetSpec(shorthand: "fashion-mnist:valid") }
            .contains("unknown split 'valid'"))
        XCTAssertTrue(errorDescription { _ = try DatasetSpec(shorthand: "cifar10:test") }
            .contains("unknown dataset 'cifar10'"))
    }

    func testDecodingFillsDefaultsAndValidates() throws {
        let decoded = try JSONDecoder().decode(DatasetSpec.self, from: Data(#"{"name":"mnist","split":"test"}"#.utf8))
        XCTAssertEqual(decoded, try DatasetSpec(name: "mnist", split: .test))
        let full = try DatasetSpec(name: "fashion-mnist", split: .train, limit: 100, pad: 0, mean: 0.5, std: 0.25,
                                   root: "data/fm")
        let roundTripped = try JSONDecoder().decode(DatasetSpec.self, from: JSONEncoder().encode(full))
        XCTAssertEqual(roundTripped, full)
        XCTAssertThrowsError(
            try JSONDecoder().decode(DatasetSpec.self, from: Data(#"{"name":"nope","split":"test"}"#.utf8)))
    }
}
