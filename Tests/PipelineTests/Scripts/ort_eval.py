"""Top-1 of an ONNX model on the first N Fashion-MNIST test images, by ONNX Runtime, with the project's
preprocessing (zero-pad 28→32, x = (pixel/255 - 0.2860)/0.3530). Prints the percentage."""
import gzip, os, sys
import numpy as np
import onnxruntime as ort

model, count = sys.argv[1], int(sys.argv[2])
root = next(d for d in ("datasets/fashion-mnist", "/usr/share/datasets/fashion-mnist")
            if os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")))
with gzip.open(os.path.join(root, "t10k-images-idx3-ubyte.gz")) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
with gzip.open(os.path.join(root, "t10k-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
padded = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
x = ((padded / 255.0 - 0.2860) / 0.3530).astype(np.float32)[:, None]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: x})[0]
print(f"{100.0 * float(np.mean(np.argmax(logits, 1) == labels)):.4f}")
