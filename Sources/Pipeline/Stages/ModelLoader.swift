import Foundation
import Graph
import ONNX

/// Opens a model file of any kind the tool accepts — our model file (safetensors) or ONNX — by looking at its
/// first bytes rather than trusting the extension.
public enum ModelLoader {
    public enum Format: String { case qatflow, onnx }

    public static func format(of url: URL) throws -> Format {
        guard let handle = FileHandle(forReadingAtPath: url.path) else {
            throw StageFailure("cannot open model '\(url.path)': no such file or not readable")
        }
        defer { try? handle.close() }
        let head = (try? handle.read(upToCount: 9)) ?? Data()
        // safetensors: 8-byte little-endian header length, then the JSON header's '{'.
        if head.count == 9, head[8] == UInt8(ascii: "{") { return .qatflow }
        if url.pathExtension.lowercased() == "onnx" || head.first == 0x08 { return .onnx }
        if head.count < 9 {
            throw StageFailure("\(url.path): file is \(head.count) bytes long; expected a model file (safetensors header at byte 0) or an ONNX model")
        }
        throw StageFailure("\(url.path): not a qatflow model file (byte 8 is not '{' of a safetensors header) and not an ONNX model (byte 0 is 0x\(String(format: "%02x", head[0])), expected 0x08)")
    }

    /// ONNX is imported in inference form (BN folded) unless `forTraining`.
    public static func load(_ url: URL, forTraining: Bool = false) throws -> Graph {
        switch try format(of: url) {
        case .qatflow: return try ModelFile.read(url)
        case .onnx: return try ONNXImporter.importModel(at: url, forTraining: forTraining)
        }
    }
}
