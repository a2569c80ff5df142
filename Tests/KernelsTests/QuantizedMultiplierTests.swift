import Kernels
import XCTest

final class QuantizedMultiplierTests: XCTestCase {
    func testConversionMatchesTFLite() {
        // 0.5 = 2^30 · 2^(0-31)
        XCTAssertEqual(QuantizedMultiplier(0.5), QuantizedMultiplier(multiplier: 1 << 30, shift: 0))
        XCTAssertEqual(QuantizedMultiplier(1.0), QuantizedMultiplier(multiplier: 1 << 30, shift: 1))
        XCTAssertEqual(QuantizedMultiplier(0.0), QuantizedMultiplier(multiplier: 0, shift: 0))
        XCTAssertEqual(QuantizedMultiplier(1e-12).multiplier, 0)
        // A fraction that rounds up to 1.0 moves to the next exponent.
        let almostOne = QuantizedMultiplier(0.999_999_999_9)
        XCTAssertEqual(almostOne, QuantizedMultiplier(multiplier: 1 << 30, shift: 1))
        for real in [0.000_123, 0.0037, 0.25, 0.7, 1.3, 17.0] {
            let q = QuantizedMultiplier(real)
            XCTAssertGreaterThanOrEqual(q.multiplier, 1 << 30)
            XCTAssertEqual(q.realValue, real, accuracy: real * 1e-9)
        }
    }
}

final class OutputQuantizationTests: XCTestCase {
    func testActivationRangesFoldIntoTheClamp() {
        for bits in 2...8 {
            let range = OutputQuantization(zeroPoint: 1, bits: bits)
            XCTAssertEqual(range.min, 0)
            XCTAssertEqual(range.max, Int32((1 << bits) - 1))
            XCTAssertEqual(range.relu().min, 1)
        }
        // ReLU6 with scale 6/255 and zero point 0 is the full 8-bit range; with scale 0.1 it stops at code 60.
        XCTAssertEqual(OutputQuantization(zeroPoint: 0).relu6(scale: 6.0 / 255).max, 255)
        XCTAssertEqual(OutputQuantization(zeroPoint: 10).relu6(scale: 0.1), OutputQuantization(zeroPoint: 10, min: 10, max: 70))
    }

    func testClipFoldsIntoTheClamp() {
        let range = OutputQuantization(zeroPoint: 100)  // scale 0.05: real 0 → 100, real 6 → 220, real −1 → 80
        XCTAssertEqual(range.clipped(realMin: -1, realMax: 2.5, scale: 0.05), OutputQuantization(zeroPoint: 100, min: 80, max: 150))
        XCTAssertEqual(range.clipped(realMin: nil, realMax: 100, scale: 0.05), range)
        XCTAssertEqual(range.relu6(scale: 0.05), OutputQuantization(zeroPoint: 100, min: 100, max: 220))
        // Ties round to even like QuantizeLinear: 0.625 / 0.25 = 2.5 → 2, 0.875 / 0.25 = 3.5 → 4.
        XCTAssertEqual(range.clipped(realMin: 0.625, realMax: nil, scale: 0.25).min, 102)
        XCTAssertEqual(range.clipped(realMin: 0.875, realMax: nil, scale: 0.25).min, 104)
        // A 4-bit range stays a 4-bit range.
        XCTAssertEqual(OutputQuantization(zeroPoint: 3, bits: 4).relu6(scale: 0.5), OutputQuantization(zeroPoint: 3, min: 3, max: 15))
    }

    func testPerChannelMultipliers() {
        let multipliers = QuantizedMultiplier.perChannel(inputScale: 0.02, weightScales: [0.01, 0.004], outputScale: 0.1)
        XCTAssertEqual(multipliers.count, 2)
        XCTAssertEqual(multipliers[0].realValue, 0.002, accuracy: 1e-12)
        XCTAssertEqual(multipliers[1].realValue, 0.0008, accuracy: 1e-12)
    }

    func testBestISAIsSupported() {
        XCTAssertTrue(KernelISA.best.isSupported)
        XCTAssertTrue(KernelISA.portable.isSupported)
        XCTAssertEqual(KernelISA.supported.last, KernelISA.best)
    }
}
