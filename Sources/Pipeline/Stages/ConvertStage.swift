import Foundation
import Graph
import ONNX

/// `convert`: an ONNX file becomes a qatflow model file. With `for_training`, BatchNormalization and Dropout
/// stay as their own nodes so later stages can train them (MNN's `--forTraining`); otherwise BN is folded into
/// the preceding convolution.
public enum ConvertStage {
    public static let kind = StageKind(
        name: "convert",
        summary: "ONNX → qatflow model file (BN and Dropout kept trainable with for_training)",
        version: 1,
        parameters: [
            ParameterSpec("model", .inputFile, help: "the ONNX file to convert, relative to the project"),
            ParameterSpec("for_training", .bool, default: .bool(false), help: "keep BatchNormalization and Dropout as trainable nodes instead of folding BN"),
        ],
        inputs: .none,
        resources: StageResources(cpus: 1, memoryMB: 2048, minutes: 15),
        run: run)

    static func run(_ context: StageContext) throws -> StageResult {
        let source = try context.file("model")
        let graph = try ONNXImporter.importModel(at: source, forTraining: try context.bool("for_training"))
        let output = context.outputDirectory.appendingPathComponent("model.safetensors")
        try ModelFile.write(graph, to: output)
        let size = (try FileManager.default.attributesOfItem(atPath: output.path)[.size] as? Int) ?? 0
        let summary = try GraphSummary(graph: graph, fileSize: size)
        return StageResult(artifacts: ["model": "model.safetensors"], metrics: [
            "parameters": .int(summary.totalParameters),
            "macs": .int(summary.totalMultiplyAccumulates),
            "nodes": .int(graph.nodes.count),
            "file_bytes": .int(size),
        ])
    }
}
