import Foundation
import Graph
import SwiftProtobuf

/// Reads an ONNX model (opsets 11–18) into the qatflow `Graph` IR.
///
/// Exporter idioms are folded at import time (Constant, Identity of constants, Shape→Gather→Unsqueeze→Concat→Reshape
/// chains, Clip/Reshape/Pad/Dropout constant inputs) so every engine sees the normal form described in GraphIR.swift.
public enum ONNXImporter {
    /// Default-domain opset versions whose operator semantics the importer maps.
    public static let supportedOpsets: ClosedRange<Int> = 11...18

    /// ONNX op types that become IR nodes.
    public static var supportedOperators: [String] { OpType.allCases.map(\.rawValue) }
    /// ONNX op types that are only evaluated at import time (their inputs must be constants or static shapes).
    public static var foldedOperators: [String] { ConstantFolding.foldOnlyOps.sorted() }

    /// Imports the file at `url`. `forTraining: true` keeps BatchNormalization and Dropout (QAT trains through
    /// them); `false` folds BN into the preceding Conv/Gemm and removes Identity/Dropout, the inference form.
    public static func importModel(at url: URL, forTraining: Bool) throws -> Graph {
        let data: Data
        do {
            data = try Data(contentsOf: url)
        } catch {
            throw ONNXImportError(kind: .malformedFile, file: url.path, message: "cannot read the file: \(error.localizedDescription)")
        }
        return try importModel(data: data, name: url.path, forTraining: forTraining)
    }

    /// Imports serialized ONNX bytes; `name` is used in error messages and as the graph name fallback.
    public static func importModel(data: Data, name: String, forTraining: Bool) throws -> Graph {
        let model = try decodeModel(data, file: name)
        let graph = try GraphBuilder(model: model, file: name, fileSize: data.count).build()
        return forTraining ? graph : try inferenceForm(graph)
    }

    /// BN folded into the preceding Conv/Gemm, Identity and Dropout removed: the graph int8 preparation and
    /// deployment start from.
    private static func inferenceForm(_ graph: Graph) throws -> Graph {
        GraphTransforms.removeIdentitiesAndDropout(try GraphTransforms.foldBatchNormalization(graph))
    }

    /// Scans the wire format first so a broken file is reported with a byte offset (swift-protobuf's errors have none).
    static func decodeModel(_ data: Data, file: String) throws -> Onnx_ModelProto {
        do {
            try WireFormatScanner(data).scanModel()
        } catch let failure as WireFormatScanner.Failure {
            throw ONNXImportError(kind: .malformedFile, file: file,
                                  message: "not a valid ONNX file (\(data.count) bytes): \(failure.message)",
                                  byteOffset: failure.offset)
        }
        do {
            var options = BinaryDecodingOptions()
            options.messageDepthLimit = 200
            return try Onnx_ModelProto(serializedBytes: data, options: options)
        } catch {
            throw ONNXImportError(kind: .malformedFile, file: file,
                                  message: "not a valid ONNX file (\(data.count) bytes, protobuf decoding failed: \(error))")
        }
    }
}

/// Builds one `Graph` from a decoded model: inputs, initializers, nodes in order, outputs, metadata.
struct GraphBuilder {
    let model: Onnx_ModelProto
    let file: String
    let fileSize: Int

    func build() throws -> Graph {
        guard model.hasGraph else {
            throw ONNXImportError(kind: .invalidGraph, file: file,
                                  message: "the model has no graph (the file has \(fileSize) bytes; is it truncated?)")
        }
        let opset = try defaultDomainOpset()
        let onnxGraph = model.graph
        var consumed = Set(onnxGraph.node.flatMap(\.input))
        consumed.formUnion(onnxGraph.output.map(\.name))
        var context = ImportContext(opset: opset, consumedNames: consumed)

        for tensor in onnxGraph.initializer {
            let (shape, storage) = try wrap(opset) { () throws(NodeConversionError) in
                try TensorProtoCodec.decode(tensor, what: "initializer '\(tensor.name)'")
            }
            context.folded[tensor.name] = .constant(shape: shape, storage: storage)
        }
        // Before IR version 4 initializers were also listed as graph inputs; they are constants, not inputs.
        let inputs = try onnxGraph.input.filter { context.folded[$0.name] == nil }.map { try valueInfo($0) }
        for input in inputs {
            context.runtimeShapes[input.name] = .some(input.shape)
        }
        for declared in onnxGraph.valueInfo {
            if let info = try? valueInfo(declared) { context.declaredShapes[declared.name] = info.shape }
        }

        for onnxNode in onnxGraph.node {
            try wrap(opset) { () throws(NodeConversionError) in
                try importNode(onnxNode, opset: opset, context: &context)
            }
        }

        let outputs = try onnxGraph.output.map { output -> ValueInfo in
            guard !context.isFolded(output.name) else {
                throw ONNXImportError(kind: .invalidGraph, file: file, message: "graph output '\(output.name)' is a constant; constant outputs are not supported")
            }
            var info = try valueInfo(output)
            if !output.type.tensorType.hasShape, let inferred = context.shape(of: output.name) {
                info.shape = inferred
            }
            return info
        }

        let graphName = onnxGraph.name.isEmpty ? ((file as NSString).lastPathComponent as NSString).deletingPathExtension : onnxGraph.name
        return Graph(name: graphName, inputs: inputs, outputs: outputs, nodes: context.nodes,
                     initializers: context.initializers, metadata: metadata(opset: opset))
    }

    private func importNode(_ onnxNode: Onnx_NodeProto, opset: Int, context: inout ImportContext) throws(NodeConversionError) {
        let name = context.uniqueNodeName(onnxNode.name, op: onnxNode.opType)
        let domain = onnxNode.domain
        guard domain.isEmpty || domain == "ai.onnx" else {
            throw unsupported(onnxNode, name: name, opset: opset, reason: "domain '\(domain)' is not supported")
        }
        let attributes = try ONNXAttributes(onnxNode, nodeName: name)
        if ConstantFolding.canFold(onnxNode, context: context) {
            try ConstantFolding(node: onnxNode, name: name, attributes: attributes).fold(into: &context)
        } else if let op = OpType(rawValue: onnxNode.opType) {
            var converter = NodeConverter(node: onnxNode, name: name, op: op, opset: opset, attributes: attributes)
            try converter.convert(into: &context)
        } else if ConstantFolding.foldOnlyOps.contains(onnxNode.opType) {
            throw unsupported(onnxNode, name: name, opset: opset,
                              reason: "it is only supported on constants and static shapes, and an input here is computed at run time")
        } else {
            throw unsupported(onnxNode, name: name, opset: opset, reason: nil)
        }
    }

    private func unsupported(_ node: Onnx_NodeProto, name: String, opset: Int, reason: String?) -> NodeConversionError {
        let why = reason.map { " (\($0))" } ?? ""
        return NodeConversionError(kind: .unsupportedOperator, message: """
            unsupported operator '\(node.opType)' in node '\(name)' at opset \(opset)\(why). \
            Supported operators: \(ONNXImporter.supportedOperators.joined(separator: ", ")); \
            folded at import time when their inputs are constant: \(ONNXImporter.foldedOperators.joined(separator: ", "))
            """)
    }

    /// Adds the file name (and, for attribute problems, the opset) to a node-level error.
    private func wrap<T>(_ opset: Int, _ body: () throws(NodeConversionError) -> T) throws -> T {
        do {
            return try body()
        } catch {
            let suffix = error.kind == .unsupportedOperator ? "" : " (opset \(opset))"
            throw ONNXImportError(kind: error.kind, file: file, message: error.message + suffix)
        }
    }

    private func defaultDomainOpset() throws -> Int {
        guard let entry = model.opsetImport.first(where: { $0.domain.isEmpty || $0.domain == "ai.onnx" }) else {
            throw ONNXImportError(kind: .invalidGraph, file: file,
                                  message: "the model declares no opset for the default ONNX domain (the file has \(fileSize) bytes; is it truncated?)")
        }
        let opset = Int(entry.version)
        guard ONNXImporter.supportedOpsets.contains(opset) else {
            throw ONNXImportError(kind: .unsupportedOpset, file: file,
                                  message: "opset \(opset) is not supported (supported: \(ONNXImporter.supportedOpsets.lowerBound)–\(ONNXImporter.supportedOpsets.upperBound))")
        }
        return opset
    }

    /// A graph input/output's type; `dim_param` (or a missing dimension) is a dynamic dimension, -1.
    private func valueInfo(_ proto: Onnx_ValueInfoProto) throws -> ValueInfo {
        let tensorType = proto.type.tensorType
        guard case .tensorType? = proto.type.value else {
            throw ONNXImportError(kind: .unsupportedTensor, file: file, message: "value '\(proto.name)' is not a tensor")
        }
        guard let dataType = TensorProtoCodec.dataType(onnxElementType: tensorType.elemType) else {
            throw ONNXImportError(kind: .unsupportedTensor, file: file,
                                  message: "value '\(proto.name)' has element type \(TensorProtoCodec.elementTypeName(tensorType.elemType)) (FLOAT, UINT8, INT8, INT32, INT64 are supported)")
        }
        let shape = tensorType.shape.dim.map { dimension -> Int in
            if case .dimValue(let value)? = dimension.value, value >= 0 { return Int(value) }
            return -1
        }
        guard shape.allSatisfy({ $0 == -1 || DimensionLimits.isValidSize($0) }) else {
            throw ONNXImportError(kind: .unsupportedTensor, file: file, message: "value '\(proto.name)' has an invalid shape \(shape)")
        }
        return ValueInfo(name: proto.name, dataType: dataType, shape: shape)
    }

    private func metadata(opset: Int) -> [String: String] {
        var result: [String: String] = [:]
        for entry in model.metadataProps { result[entry.key] = entry.value }
        result["onnx.opset"] = String(opset)
        result["onnx.ir_version"] = String(model.irVersion)
        if !model.producerName.isEmpty { result["onnx.producer_name"] = model.producerName }
        if !model.producerVersion.isEmpty { result["onnx.producer_version"] = model.producerVersion }
        result["onnx.source"] = (file as NSString).lastPathComponent
        return result
    }
}
