#!/usr/bin/env python3
"""Makes a 3-channel model from a 1-channel one: the first convolution's weights are repeated over R, G, B and
divided by 3, and the input becomes N x 3 x H x W. On gray images given as RGB it computes the same function.

  rgb_model.py IN.onnx OUT.onnx
"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

model = onnx.load(sys.argv[1])
graph = model.graph
first = next(node for node in graph.node if node.op_type == "Conv")
weights = {init.name: init for init in graph.initializer}
w = numpy_helper.to_array(weights[first.input[1]])
assert w.shape[1] == 1, w.shape
rgb = np.repeat(w / 3.0, 3, axis=1).astype(np.float32)
weights[first.input[1]].CopyFrom(numpy_helper.from_array(rgb, first.input[1]))
graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
onnx.checker.check_model(model)
onnx.save(model, sys.argv[2])
