#!/usr/bin/env python3
"""Top-1 predictions of an ONNX model on the first N Fashion-MNIST test images, by ONNX Runtime with its default
optimizations, after checking the model with onnx.checker (full_check). Preprocessing as the project's Datasets
target does it: zero-pad 28 -> 32, x = (pixel/255 - 0.2860)/0.3530.

  ort_predictions.py MODEL N DATASET_DIR...

Prints one JSON object: {"images", "top1" (percent), "predictions" (class per image), "ops" (op types of the model)}.
"""
import collections
import gzip
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

model_path, count, candidates = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
root = next(d for d in candidates if os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")))
with gzip.open(os.path.join(root, "t10k-images-idx3-ubyte.gz")) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
with gzip.open(os.path.join(root, "t10k-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]

model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
padded = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
x = ((padded / 255.0 - 0.2860) / 0.3530).astype(np.float32)[:, None]
options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
predictions = np.concatenate([np.argmax(session.run(None, {name: x[i:i + 500]})[0], 1) for i in range(0, len(x), 500)])
print(json.dumps({
    "images": int(len(labels)),
    "top1": 100.0 * float(np.mean(predictions == labels)),
    "predictions": [int(p) for p in predictions],
    "ops": dict(collections.Counter(node.op_type for node in model.graph.node)),
}))
