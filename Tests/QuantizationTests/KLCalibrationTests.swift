import XCTest
@testable import Quantization

/// Entropy (KL) calibration on synthetic histograms whose right answer is known (docs/quantization.md).
final class KLCalibrationTests: XCTestCase {
    /// A histogram over [low, high] of the given values.
    private func histogram(_ values: [Float], low: Float, high: Float) -> Histogram {
        var histogram = Histogram(low: low, high: high)
        values.withUnsafeBufferPointer { histogram.add($0) }
        return histogram
    }

    /// `count` values evenly spread over (low, high).
    private func even(_ count: Int, _ low: Float, _ high: Float) -> [Float] {
        (0..<count).map { low + (high - low) * (Float($0) + 0.5) / Float(count) }
    }

    /// `count` values with an exponential distribution (mean 1): a dense body and a thinning tail out to ln(2·count).
    private func exponential(_ count: Int) -> [Float] {
        (0..<count).map { -log(1 - (Float($0) + 0.5) / Float(count)) }
    }

    func testUniformDistributionIsNotClipped() {
        let values = even(200_000, 0, 10)
        let (low, high) = RangeSearch.kl(histogram(values, low: 0, high: 10), bits: 8)
        XCTAssertEqual(low, 0)
        XCTAssertGreaterThan(high, 9.9, "nothing to gain from clipping a uniform distribution")
    }

    func testLongSparseTailIsClipped() {
        // Exponential: the last third of the range holds 0.01 % of the values; 8-bit steps are better spent on the body.
        let values = exponential(1_000_000)
        let top = values.max()!
        let (low, high) = RangeSearch.kl(histogram(values, low: 0, high: top), bits: 8)
        XCTAssertEqual(low, 0)
        XCTAssertLessThan(high, 0.9 * top, "the sparse tail is clipped")
        XCTAssertGreaterThan(high, 6, "the body is kept")
    }

    func testZeroSpikeAfterReLUDoesNotDragTheThresholdDown() {
        // 60 % exact zeros (ReLU) on top of a body: zeros are exact on every grid, so they must not move the range.
        for (body, bits) in [(even(200_000, 0, 10), 8), (exponential(200_000), 8), (exponential(200_000), 4)] {
            let top = body.max()!
            let withZeros = body + [Float](repeating: 0, count: 300_000)
            let alone = RangeSearch.kl(histogram(body, low: 0, high: top), bits: bits)
            let spiked = RangeSearch.kl(histogram(withZeros, low: 0, high: top), bits: bits)
            XCTAssertEqual(spiked.1, alone.1, "\(bits) bits, top \(top)")
        }
    }

    func testDistantPointMassIsNotClipped() {
        // The stem ReLU of MobileNetV2-FMNIST in miniature: a body made of point masses (one channel's response to a
        // constant background each) on a thin continuum, and 5 % of the values at one far value. KL(P‖Q) alone
        // charges the point masses as lost information as soon as a step holds more than one bin and charges the
        // clipped 5 % only once, so it clipped at the body; moving 5 % of the values from 13 to 2 is far worse in
        // squared error than not clipping, so that threshold is not a candidate.
        var values = even(400_000, 0, 2)
        for atom in 0..<40 { values += [Float](repeating: 0.05 * Float(atom) + 0.013, count: 10_000) }
        values += [Float](repeating: 13, count: 42_000)
        let histogram = histogram(values, low: 0, high: 13)
        let (_, high) = RangeSearch.kl(histogram, bits: 8)
        XCTAssertGreaterThanOrEqual(high, 13 - histogram.binWidth, "the point mass at 13 stays representable")
    }

    func testSignedTensorWithSparseTailsIsClippedOnBothSides() {
        let positive = exponential(500_000)
        let values = positive + positive.map { -$0 }
        let top = positive.max()!
        let (low, high) = RangeSearch.kl(histogram(values, low: -top, high: top), bits: 8)
        XCTAssertEqual(low, -high, "a symmetric distribution gets a symmetric range")
        XCTAssertLessThan(high, 0.9 * top)
        XCTAssertGreaterThan(high, 5)
    }

    func testFourBitsStillClipsALongTail() {
        // Fewer levels make clipping more valuable, not less.
        let values = exponential(1_000_000)
        let top = values.max()!
        let (_, high) = RangeSearch.kl(histogram(values, low: 0, high: top), bits: 4)
        XCTAssertLessThan(high, 0.7 * top)
        XCTAssertGreaterThan(high, 2)
    }
}
