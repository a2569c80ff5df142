import Foundation

/// A fixed-range histogram of one tensor's values over calibration data. The range is fixed by a first pass
/// (min/max), so every batch lands in the same 2048 bins and KL, percentile and MSE can be computed exactly
/// on the same counts.
struct Histogram: Sendable {
    let low: Float
    let high: Float
    private(set) var counts: [Double]

    init(low: Float, high: Float, bins: Int = 2048) {
        self.low = low
        self.high = high > low ? high : low + 1e-8
        counts = Array(repeating: 0, count: bins)
    }

    var binWidth: Float { (high - low) / Float(counts.count) }
    var total: Double { counts.reduce(0, +) }

    mutating func add(_ values: UnsafeBufferPointer<Float>) {
        let bins = counts.count
        let inverse = Float(bins) / (high - low)
        counts.withUnsafeMutableBufferPointer { counts in
            for value in values {
                let index = Int((value - low) * inverse)
                counts[min(max(index, 0), bins - 1)] += 1
            }
        }
    }

    func center(_ bin: Int) -> Float { low + (Float(bin) + 0.5) * binWidth }

    /// The value below which `fraction` of the mass lies.
    func quantile(_ fraction: Double) -> Float {
        let target = fraction * total
        var running = 0.0
        for (bin, count) in counts.enumerated() {
            running += count
            if running >= target { return low + Float(bin + 1) * binWidth }
        }
        return high
    }

    /// Expected squared error of quantizing the histogram's mass with `grid` (bin centres stand for their bins).
    func squaredError(_ grid: AffineQuantization) -> Double {
        var error = 0.0
        for (bin, count) in counts.enumerated() where count > 0 {
            let x = center(bin)
            let difference = Double(x - grid.fakeQuantize(x))
            error += count * difference * difference
        }
        return error
    }
}

/// Range choices computed from a histogram.
enum RangeSearch {
    /// Percentile clipping at both ends.
    static func percentile(_ histogram: Histogram, _ percent: Double) -> (Float, Float) {
        let tail = (100 - percent) / 100
        return (histogram.quantile(tail), histogram.quantile(1 - tail))
    }

    /// Shrinks [low, high] by a factor α ∈ (0, 1] and keeps the α with the least expected squared error.
    static func mse(_ histogram: Histogram, bits: Int) -> (Float, Float) {
        var best = (histogram.low, histogram.high), bestError = Double.infinity
        for step in 0..<100 {
            let alpha = 1 - Float(step) * 0.0095
            let grid = AffineQuantization.activation(low: histogram.low * alpha, high: histogram.high * alpha, bits: bits)
            let error = histogram.squaredError(grid)
            if error < bestError {
                bestError = error
                best = (histogram.low * alpha, histogram.high * alpha)
            }
        }
        return best
    }

    /// Entropy calibration (TensorRT-style, Migacz 2017): for each candidate threshold, compare the clipped reference
    /// distribution P with its re-quantization Q into `levels` bins, and keep the threshold of least KL(P‖Q).
    /// Non-negative tensors (after ReLU) use one-sided thresholds over [0, high] with 2^bits levels (the grid is
    /// unsigned, zero point 0); others use |x| thresholds with 2^(bits−1) levels, applied symmetrically and then
    /// intersected with the observed range.
    ///
    /// Candidates are restricted to thresholds whose grid has no larger expected squared error than the grid on the
    /// whole observed range. KL(P‖Q) alone cannot see how far clipped values move: the clipped tail only adds to P's
    /// last bin, so its cost is the same whether a value moves by one step or by ten. It also charges every point
    /// mass (a value repeated exactly, e.g. a channel's response to a constant image background) that shares a
    /// quantization step with sparser bins as lost information, although the grid maps it to one code. On
    /// MobileNetV2-FMNIST that made the stem ReLU's threshold 2.1 of 13.4 (6 % of its values clipped, among them a
    /// 4.5 % point mass at 13.4) and cost 4.5 points. A threshold that represents the tensor worse than not clipping
    /// at all is never a better choice; among the ones that are not, KL still chooses.
    static func kl(_ histogram: Histogram, bits: Int) -> (Float, Float) {
        let levels = 1 << bits
        let noClipError = histogram.squaredError(AffineQuantization.activation(low: histogram.low, high: histogram.high, bits: bits))
        if histogram.low >= 0 {
            // After ReLU most of the mass is exact zeros, which every grid represents exactly; left in, that
            // spike dominates the divergence and drives the threshold far too low (MNN's KL loses 14 points on
            // MobileNetV2-FMNIST this way, PEERS.md). The first bin is therefore left out.
            var counts = histogram.counts
            counts[0] = 0
            let threshold = klThreshold(counts: counts, binWidth: histogram.binWidth, start: histogram.low, levels: levels) { threshold in
                histogram.squaredError(AffineQuantization.activation(low: histogram.low, high: threshold, bits: bits)) <= noClipError
            }
            return (histogram.low, threshold)
        }
        // Fold the histogram onto |x| with the same bin width.
        let width = histogram.binWidth
        let extent = max(-histogram.low, histogram.high)
        var folded = Array(repeating: 0.0, count: max(Int((extent / width).rounded(.up)), 1))
        for (bin, count) in histogram.counts.enumerated() where count > 0 {
            let index = min(Int(abs(histogram.center(bin)) / width), folded.count - 1)
            folded[index] += count
        }
        func range(_ threshold: Float) -> (Float, Float) { (max(histogram.low, -threshold), min(histogram.high, threshold)) }
        let threshold = klThreshold(counts: folded, binWidth: width, start: 0, levels: max(levels / 2, 2)) { threshold in
            let (low, high) = range(threshold)
            return histogram.squaredError(AffineQuantization.activation(low: low, high: high, bits: bits)) <= noClipError
        }
        return range(threshold)
    }

    /// The KL-best threshold among those `admissible` accepts (the full range always is).
    private static func klThreshold(counts: [Double], binWidth: Float, start: Float, levels: Int,
                                    admissible: (Float) -> Bool) -> Float {
        let bins = counts.count
        guard bins > levels else { return start + Float(bins) * binWidth }
        var bestDivergence = Double.infinity
        var bestEnd = bins
        let stride = max(1, (bins - levels) / 256)
        // The full range is always a candidate (the stride need not land on it).
        let ends = Array(Swift.stride(from: levels, to: bins, by: stride)) + [bins]
        for end in ends {
            let threshold = start + Float(end) * binWidth
            guard end == bins || admissible(threshold) else { continue }
            // P: the first `end` bins, with the clipped tail added to the last bin.
            var reference = Array(counts[0..<end])
            reference[end - 1] += counts[end...].reduce(0, +)
            // Q: merge the first `end` bins into `levels` groups, spread each group's mass over its non-empty bins.
            var candidate = Array(repeating: 0.0, count: end)
            for level in 0..<levels {
                let from = level * end / levels, to = (level + 1) * end / levels
                guard to > from else { continue }
                var mass = 0.0, nonEmpty = 0
                for bin in from..<to { mass += counts[bin]; if counts[bin] > 0 { nonEmpty += 1 } }
                guard nonEmpty > 0 else { continue }
                for bin in from..<to where counts[bin] > 0 { candidate[bin] = mass / Double(nonEmpty) }
            }
            let divergence = klDivergence(reference, candidate)
            if divergence < bestDivergence {
                bestDivergence = divergence
                bestEnd = end
            }
        }
        return start + Float(bestEnd) * binWidth
    }

    private static func klDivergence(_ p: [Double], _ q: [Double]) -> Double {
        let pTotal = p.reduce(0, +), qTotal = q.reduce(0, +)
        guard pTotal > 0, qTotal > 0 else { return .infinity }
        var divergence = 0.0
        for index in p.indices where p[index] > 0 {
            let pi = p[index] / pTotal
            // A bin with mass in P but none in Q is smoothed rather than infinite.
            let qi = max(q[index] / qTotal, 1e-12)
            divergence += pi * log(pi / qi)
        }
        return divergence
    }
}
