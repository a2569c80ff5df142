import Datasets

/// A seeded random subset of a dataset (calibration should not depend on the dataset's order).
public enum CalibrationSubset {
    public static func take(_ count: Int, from data: LabeledImages, seed: UInt64) throws -> LabeledImages {
        guard count < data.count else { return data }
        var generator = SplitMix64(seed: seed)
        var indices = Array(0..<data.count)
        for i in 0..<count {
            let j = i + Int(generator.next() % UInt64(data.count - i))
            indices.swapAt(i, j)
        }
        let chosen = Array(indices.prefix(count))
        let (pixels, labels) = data.batch(chosen)
        return try LabeledImages(count: count, channels: data.channels, height: data.height, width: data.width,
                                 pixels: pixels, labels: labels, classNames: data.classNames)
    }
}

/// A small, fast, seedable generator (Vigna's SplitMix64): same seed, same subset, on every machine.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
