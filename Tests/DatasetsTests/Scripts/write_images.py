#!/usr/bin/env python3
"""Writes Fashion-MNIST test images as real image files for ImageSetTests, with Pillow (the reference decoder).

  write_images.py folder IDX_DIR OUT N   -> OUT/<label>_<name>/<index>.png (8-bit gray PNGs, class folders)
  write_images.py list IDX_DIR OUT N     -> OUT/img/<index>.jpg (RGB JPEG, quality 95, channels made to differ),
                                            OUT/list.txt ('img/<index>.jpg LABEL' lines) and OUT/reference.npy:
                                            torchvision's Resize(36) + CenterCrop(32) + ToTensor + Normalize on
                                            Pillow's decode, float32 N x 3 x 32 x 32
  write_images.py jpegfolders IDX_DIR OUT N -> OUT/calib/<index>.jpg (the first 300 images, no labels) and
                                            OUT/val/<label>_<name>/<index>.jpg (the next N), RGB JPEG, quality 95
"""
import gzip
import os
import sys

import numpy as np
from PIL import Image

mode, root, out, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with gzip.open(os.path.join(root, "t10k-images-idx3-ubyte.gz")) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
with gzip.open(os.path.join(root, "t10k-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
names = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]

if mode == "folder":
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(out, f"{label}_{names[label]}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(image, "L").save(os.path.join(folder, f"{index:05d}.png"))
elif mode == "jpegfolders":
    with gzip.open(os.path.join(root, "t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:300 + count]
    with gzip.open(os.path.join(root, "t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:300 + count]
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = os.path.join(out, "calib") if index < 300 else os.path.join(out, "val", f"{label}_{names[label]}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.stack([image] * 3, axis=-1), "RGB").save(os.path.join(folder, f"{index:05d}.jpg"), quality=95)
elif mode == "list":
    os.makedirs(os.path.join(out, "img"), exist_ok=True)
    mean, std = np.array([0.5, 0.4, 0.3], np.float32), np.array([0.2, 0.25, 0.3], np.float32)
    reference = []
    with open(os.path.join(out, "list.txt"), "w") as listing:
        for index, (image, label) in enumerate(zip(images, labels)):
            rgb = np.stack([image, 255 - image, image // 2], axis=-1)
            path = os.path.join(out, "img", f"{index:05d}.jpg")
            Image.fromarray(rgb, "RGB").save(path, quality=95)
            listing.write(f"img/{index:05d}.jpg {label}\n")
            decoded = Image.open(path).convert("RGB").resize((36, 36), Image.BILINEAR)
            left = top = int(round((36 - 32) / 2.0))
            cropped = np.asarray(decoded.crop((left, top, left + 32, top + 32)), np.float32) / 255.0
            reference.append(((cropped - mean) / std).transpose(2, 0, 1))
    np.save(os.path.join(out, "reference.npy"), np.stack(reference).astype(np.float32))
