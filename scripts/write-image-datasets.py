#!/usr/bin/env python3
"""`make datasets`: writes Fashion-MNIST as image files for pipelines/imagefolder.yaml (real PNG and JPEG files,
written by Pillow, read back by qatflow's libpng/libjpeg-turbo decoders).

  datasets/fashion-mnist-images/calibration/<index>.jpg    the first 1,000 training images, gray JPEG quality 95,
                                                           no class folders (an unlabeled calibration set)
  datasets/fashion-mnist-images/test/<label>_<name>/<index>.png   the 10,000 test images, gray PNG, class folders

Writes into a temporary folder renamed into place, so an interrupted run leaves nothing half-written; does nothing
when the folder exists.   Usage: write-image-datasets.py OUT_DIR IDX_DIR... (the first holding the IDX files)
"""
import gzip
import os
import shutil
import sys

import numpy as np
from PIL import Image

out = sys.argv[1]
idx = next(d for d in sys.argv[2:] if os.path.exists(os.path.join(d, "t10k-images-idx3-ubyte.gz")))
if os.path.isdir(out):
    print(f"write-image-datasets: {out} exists")
    sys.exit(0)
names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def read(prefix):
    with gzip.open(os.path.join(idx, f"{prefix}-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(idx, f"{prefix}-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


temporary = out + ".tmp"
shutil.rmtree(temporary, ignore_errors=True)
train, _ = read("train")
os.makedirs(os.path.join(temporary, "calibration"))
for index, image in enumerate(train[:1000]):
    Image.fromarray(image, "L").save(os.path.join(temporary, "calibration", f"{index:05d}.jpg"), quality=95)
test, labels = read("t10k")
for index, (image, label) in enumerate(zip(test, labels)):
    folder = os.path.join(temporary, "test", f"{label}_{names[label]}")
    os.makedirs(folder, exist_ok=True)
    Image.fromarray(image, "L").save(os.path.join(folder, f"{index:05d}.png"))
os.rename(temporary, out)
print(f"write-image-datasets: wrote {out} (1,000 calibration JPEGs, 10,000 test PNGs in class folders)")
