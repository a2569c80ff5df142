#!/usr/bin/env python3
"""Checks an exported ONNX model the way a user's toolchain would, for QDQExportTests.

  ort_qdq_check.py MODEL INPUT.f32 N,C,H,W OUT_DIR

- onnx.checker with full_check (types and shapes inferred from the declared opset: a non-standard attribute,
  a wrong dtype or a per-axis parameter of the wrong length fails here);
- ONNX Runtime with its default optimizations (what users get: DQ -> Conv -> Q groups fused into QLinearConv and
  friends), output to OUT_DIR/optimized.f32, and the op types of the graph ORT actually ran;
- ONNX Runtime with optimizations off (plain ONNX semantics), output to OUT_DIR/reference.f32.

Prints one JSON object: {"output_shape", "optimized_ops": {op: count}, "model_ops": {op: count},
"attributes": [names on Q/DQ nodes], "opset", "quantizer_scale_shapes": [dims of each QuantizeLinear scale]}. Tensors are raw little-endian float32.
"""
import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def op_counts(model):
    return dict(collections.Counter(node.op_type for node in model.graph.node))


def run(path, x, level, optimized_path=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.graph_optimization_level = level
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main():
    model_path, input_path, shape, out_dir = sys.argv[1:5]
    shape = [int(v) for v in shape.split(",")]
    x = np.fromfile(input_path, dtype="<f4").reshape(shape)
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)

    optimized_path = os.path.join(out_dir, "ort-optimized.onnx")
    optimized = run(model_path, x, ort.GraphOptimizationLevel.ORT_ENABLE_ALL, optimized_path)
    reference = run(model_path, x, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    np.ascontiguousarray(optimized, dtype="<f4").tofile(os.path.join(out_dir, "optimized.f32"))
    np.ascontiguousarray(reference, dtype="<f4").tofile(os.path.join(out_dir, "reference.f32"))

    qdq_attributes = sorted({a.name for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                             for a in n.attribute})
    initializers = {t.name: list(t.dims) for t in model.graph.initializer}
    scale_shapes = [initializers.get(n.input[1]) for n in model.graph.node if n.op_type == "QuantizeLinear"]
    print(json.dumps({
        "quantizer_scale_shapes": scale_shapes,
        "output_shape": list(optimized.shape),
        "optimized_ops": op_counts(onnx.load(optimized_path)),
        "model_ops": op_counts(model),
        "attributes": qdq_attributes,
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
    }))


if __name__ == "__main__":
    main()
