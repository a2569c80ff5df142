"""Top-1 of an ONNX model by ONNX Runtime on a folder of class subfolders (sorted names = labels), decoded by Pillow
and preprocessed as qatflow's dataset spec says: RGB, zero-pad, x = (pixel/255 - mean)/std. Prints the percentage.

  ort_folder_eval.py MODEL FOLDER PAD MEAN STD
"""
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

model, folder, pad, mean, std = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
images, labels = [], []
for label, name in enumerate(sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))):
    for file in sorted(os.listdir(os.path.join(folder, name))):
        pixels = np.asarray(Image.open(os.path.join(folder, name, file)).convert("RGB"), np.float32)
        padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)))
        images.append(((padded / 255.0 - mean) / std).transpose(2, 0, 1).astype(np.float32))
        labels.append(label)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
logits = session.run(None, {session.get_inputs()[0].name: np.stack(images)})[0]
print(f"{100.0 * float(np.mean(np.argmax(logits, 1) == np.array(labels))):.4f}")
