// swift-tools-version: 6.1
// qatflow: quantization toolchain for CNNs. Target layout follows docs/ARCHITECTURE.md.
import PackageDescription

let package = Package(
    name: "qatflow",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "qatflow", targets: ["qatflow"]),
    ],
    dependencies: [
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
    ],
    targets: [
        .target(name: "Tensor", dependencies: ["CKernels"]),
        .target(name: "CKernels"),
        .target(name: "Kernels", dependencies: ["CKernels", "Tensor"]),
        .target(name: "Graph", dependencies: ["Tensor"]),
        .target(name: "ONNX", dependencies: ["Graph", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["Proto"]),
        .target(name: "Inference", dependencies: ["Graph", "Tensor", "Kernels"]),
        .target(name: "Quantization", dependencies: ["Graph", "Inference", "Datasets", "Tensor", "Training"]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG"),
        .target(name: "Datasets", dependencies: ["CZlib", "CPNG", "CTurboJPEG"]),
        .target(name: "Training", dependencies: ["Graph", "Tensor", "Datasets"]),
        .target(name: "Pipeline", dependencies: [
            "Graph", "ONNX", "Inference", "Quantization", "Training", "Datasets", "Tensor", "Kernels",
            "Yams",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .executableTarget(name: "qatflow", dependencies: [
            "Pipeline", "Graph", "Inference", "Datasets", "Tensor", "Kernels",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .executableTarget(name: "kernel-bench", dependencies: ["Kernels"]),
        .testTarget(name: "PipelineTests", dependencies: ["Pipeline"], exclude: ["Scripts", "Golden"]),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets"], exclude: ["Scripts"]),
        .testTarget(name: "GraphTests", dependencies: ["Graph"]),
        .testTarget(name: "ONNXTests", dependencies: ["ONNX", "Inference"], exclude: ["Scripts"]),
        .testTarget(name: "InferenceTests", dependencies: ["Inference", "Quantization", "Datasets", "ONNX"]),
        .testTarget(name: "QuantizationTests", dependencies: ["Quantization", "Training", "ONNX", "Datasets"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Inference", "Graph"]),
    ],
    swiftLanguageModes: [.v6]
)
