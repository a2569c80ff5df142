#!/usr/bin/env python3
"""Whether ONNX Runtime's u8 x s8 integer kernels saturate on this CPU.

Runs MatMulInteger on activations [255, 255] and weights [127, 127]: an exact kernel (VNNI vpdpbusd, or a kernel
that widens to 32 bits first) gives 64770; one that adds the pair into a saturating int16 (vpmaddubsw, ONNX
Runtime's AVX2 path) gives 32767. The weight is a constant initializer, as in an exported QDQ model, so ONNX
Runtime takes its packed-weight GEMM path. Prints one JSON object: {"onnxruntime", "pair_sum", "saturates"}.
"""
import json

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

graph = helper.make_graph(
    [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "saturation_probe",
    [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 2])],
    [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
    [helper.make_tensor("b", TensorProto.INT8, [2, 1], [127, 127])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
pair_sum = int(session.run(None, {"a": np.array([[255, 255]], np.uint8)})[0][0, 0])
print(json.dumps({"onnxruntime": ort.__version__, "pair_sum": pair_sum, "saturates": pair_sum != 64770}))
