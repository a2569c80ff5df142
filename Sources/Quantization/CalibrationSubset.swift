import Datasets

/// A seeded random subset of a dataset (calibration should not depend on the dataset's order), decoded into memory.
public enum CalibrationSubset {
    public static func take(_ count: Int, from data: any ImageDataset, seed: UInt64) throws -> LabeledImages {
        try data.materializedSubset(count, seed: seed)
    }
}
