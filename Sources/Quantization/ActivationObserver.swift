import Foundation

/// Statistics of one activation tensor over calibration batches, in two passes: the first sees min/max (and
/// their per-batch moving average), the second fills a histogram over the first pass's range.
struct ActivationObserver: Sendable {
    private(set) var low = Float.infinity
    private(set) var high = -Float.infinity
    private(set) var movingLow: Double?
    private(set) var movingHigh: Double?
    private(set) var histogram: Histogram?

    /// First pass.
    mutating func observeRange(_ values: UnsafeBufferPointer<Float>, momentum: Double) {
        var batchLow = Float.infinity, batchHigh = -Float.infinity
        for value in values where value.isFinite {
            batchLow = min(batchLow, value)
            batchHigh = max(batchHigh, value)
        }
        guard batchLow <= batchHigh else { return }
        low = min(low, batchLow)
        high = max(high, batchHigh)
        movingLow = movingLow.map { momentum * $0 + (1 - momentum) * Double(batchLow) } ?? Double(batchLow)
        movingHigh = movingHigh.map { momentum * $0 + (1 - momentum) * Double(batchHigh) } ?? Double(batchHigh)
    }

    /// Second pass.
    mutating func observeHistogram(_ values: UnsafeBufferPointer<Float>) {
        if histogram == nil { histogram = Histogram(low: min(low, 0), high: max(high, 0)) }
        histogram!.add(values)
    }

    /// The range the chosen method picks.
    func range(_ method: ActivationCalibration, bits: Int) -> (Float, Float) {
        guard low <= high else { return (0, 0) }
        switch method {
        case .max:
            return (low, high)
        case .movingAverage:
            return (Float(movingLow ?? Double(low)), Float(movingHigh ?? Double(high)))
        case .percentile(let percent):
            return histogram.map { RangeSearch.percentile($0, percent) } ?? (low, high)
        case .mse:
            return histogram.map { RangeSearch.mse($0, bits: bits) } ?? (low, high)
        case .kl:
            return histogram.map { RangeSearch.kl($0, bits: bits) } ?? (low, high)
        }
    }

    /// Fraction of the calibration values that the grid clips.
    func clippingRatio(_ grid: AffineQuantization) -> Double {
        guard let histogram, histogram.total > 0 else { return 0 }
        let range = grid.representableRange
        var clipped = 0.0
        for (bin, count) in histogram.counts.enumerated() where count > 0 {
            let x = histogram.center(bin)
            if x < range.lowerBound - histogram.binWidth / 2 || x > range.upperBound + histogram.binWidth / 2 { clipped += count }
        }
        return clipped / histogram.total
    }
}

/// Per-output-channel symmetric weight quantization.
enum WeightQuantizer {
    /// Quantizes `values` laid out with `channels` slices along the leading axis or, when `channelsLast`, along
    /// the trailing axis. Returns int8 values and one scale per channel.
    static func quantize(_ values: [Float], channels: Int, channelsLast: Bool, bits: Int,
                         method: WeightCalibration) -> (quantized: [Int8], scales: [Float]) {
        let grids = grids(values, channels: channels, channelsLast: channelsLast, bits: bits, method: method)
        return (quantize(values, grids: grids, channelsLast: channelsLast), grids.map(\.scale))
    }

    /// `values` on the given per-channel grids (one per channel, laid out as in `quantize`).
    static func quantize(_ values: [Float], grids: [AffineQuantization], channelsLast: Bool) -> [Int8] {
        let channels = grids.count, perChannel = values.count / channels
        var quantized = [Int8](repeating: 0, count: values.count)
        for channel in 0..<channels {
            let grid = grids[channel]
            for element in 0..<perChannel {
                let i = channelsLast ? element * channels + channel : channel * perChannel + element
                quantized[i] = Int8(grid.quantize(values[i]))
            }
        }
        return quantized
    }

    /// One symmetric grid per channel: max|W| / qmax, or (`mse`) the clipping of max|W| in 1 % steps down to
    /// 51 % that minimises the channel's squared quantization error.
    static func grids(_ values: [Float], channels: Int, channelsLast: Bool, bits: Int,
                      method: WeightCalibration) -> [AffineQuantization] {
        let perChannel = values.count / channels
        func index(_ channel: Int, _ element: Int) -> Int {
            channelsLast ? element * channels + channel : channel * perChannel + element
        }
        var grids: [AffineQuantization] = []
        grids.reserveCapacity(channels)
        for channel in 0..<channels {
            var maxAbs: Float = 0
            for element in 0..<perChannel { maxAbs = max(maxAbs, abs(values[index(channel, element)])) }
            var grid = AffineQuantization.weight(maxAbs: maxAbs, bits: bits)
            if method == .mse && maxAbs > 0 {
                var bestError = Double.infinity
                for step in 0..<50 {
                    let candidate = AffineQuantization.weight(maxAbs: maxAbs * (1 - Float(step) * 0.01), bits: bits)
                    var error = 0.0
                    for element in 0..<perChannel {
                        let w = values[index(channel, element)]
                        let d = Double(w - candidate.fakeQuantize(w))
                        error += d * d
                    }
                    if error < bestError { bestError = error; grid = candidate }
                }
            }
            grids.append(grid)
        }
        return grids
    }
}
