/// The stage kinds shipped to users. Each engine issue adds its kinds here; test-only kinds never appear.
extension StageRegistry {
    public static let production = StageRegistry([
        ConvertStage.kind,
        TrainStage.kind,
        QuantizeStage.kind,
        QATStage.kind,
        EvaluateStage.kind,
        ExportStage.kind,
    ])
}
