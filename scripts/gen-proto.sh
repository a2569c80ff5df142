#!/usr/bin/env bash
# Regenerates Sources/ONNX/Generated/onnx.pb.swift from Sources/ONNX/Proto/onnx.proto.
# Why not the SwiftPM protobuf plugin: the generated code is committed so normal builds need neither protoc nor a
# plugin build; this script is only for when the .proto changes (`make proto`).
# Needs Debian's protoc (apt-get install protobuf-compiler). protoc-gen-swift is built from the swift-protobuf
# checkout pinned to the same version as Package.swift, so the generated code matches the runtime library.
set -euo pipefail

SWIFT_PROTOBUF_VERSION="${SWIFT_PROTOBUF_VERSION:-1.39.0}"
SWIFT_PROTOBUF_SOURCE="${SWIFT_PROTOBUF_SOURCE:-/opt/swift-packages/apple/swift-protobuf.git}"
if [ ! -e "$SWIFT_PROTOBUF_SOURCE" ]; then
    SWIFT_PROTOBUF_SOURCE="https://github.com/apple/swift-protobuf.git"
fi
WORK_DIR="${SWIFT_PROTOBUF_WORK_DIR:-${TMPDIR:-/tmp}/qatflow-swift-protobuf-$SWIFT_PROTOBUF_VERSION}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
proto_dir="$repo_root/Sources/ONNX/Proto"
out_dir="$repo_root/Sources/ONNX/Generated"

command -v protoc >/dev/null || { echo "gen-proto: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

if [ ! -d "$WORK_DIR/.git" ]; then
    git clone --quiet "$SWIFT_PROTOBUF_SOURCE" "$WORK_DIR"
fi
git -C "$WORK_DIR" checkout --quiet "$SWIFT_PROTOBUF_VERSION"
(cd "$WORK_DIR" && swift build -c release --product protoc-gen-swift)
plugin="$(cd "$WORK_DIR" && swift build -c release --show-bin-path)/protoc-gen-swift"

mkdir -p "$out_dir"
protoc \
    --plugin=protoc-gen-swift="$plugin" \
    --proto_path="$proto_dir" \
    --swift_out="$out_dir" \
    --swift_opt=Visibility=Internal \
    "$proto_dir/onnx.proto"
echo "gen-proto: wrote $out_dir/onnx.pb.swift"
