#!/usr/bin/env python3
"""Data-loading benchmarks for `make bench` (issue #19): JPEG decode + preprocessing at 224 against the QAT step it
feeds, and the peak memory of an evaluation over a large image folder against a small one.

  bench_data.py rate QATFLOW WORK           decode + resize 256 + crop 224 on 2 threads (qatflow bench-data) and
                                            a QAT step of MobileNetV2-224 (3 channels, random weights) at batch 32
                                            on 2 threads fed by the same streaming reader; both in images/s
  bench_data.py memory QATFLOW WORK [N]     peak RSS of `qatflow eval` over N (default 50,000) and over 1,000
                                            JPEGs of 256x256 at 224 (resize 256 + crop 224; a tiny 3-channel model,
                                            so the data path dominates); as floats in memory N images would need
                                            N x 3 x 224 x 224 x 4 bytes

The JPEGs are Fashion-MNIST images upscaled and colourised with noise (so they compress like photos, ~quality 90).
"""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench_int8_ort  # noqa: E402  (MobileNetV2-224 builder)

NORMALIZE = ["--channels", "rgb", "--resize", "256", "--crop", "224", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225"]


def fashion_images(count):
    for root in ("/usr/share/datasets/fashion-mnist", os.path.join(HERE, "..", "datasets", "fashion-mnist")):
        path = os.path.join(root, "train-images-idx3-ubyte.gz")
        if os.path.exists(path):
            with gzip.open(path) as f:
                images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
            return images[np.arange(count) % len(images)]
    sys.exit("Fashion-MNIST not found: run make datasets")


def write_jpegs(folder, count, size, classes=10):
    """`count` JPEGs of `size` (width, height) in `classes` class folders; skipped when the folder is complete."""
    marker = os.path.join(folder, f".complete-{count}-{size[0]}x{size[1]}")
    if os.path.exists(marker):
        return
    rng = np.random.default_rng(0)
    images = fashion_images(count)
    for index, image in enumerate(images):
        directory = os.path.join(folder, f"class{index % classes}")
        os.makedirs(directory, exist_ok=True)
        base = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.float32)
        tint = rng.uniform(0.4, 1.0, 3).astype(np.float32)
        noise = rng.normal(0, 12, (size[1], size[0], 3)).astype(np.float32)
        rgb = np.clip(base[..., None] * tint + noise + 20, 0, 255).astype(np.uint8)
        Image.fromarray(rgb, "RGB").save(os.path.join(directory, f"{index:06d}.jpg"), quality=90)
    open(marker, "w").close()


def run_json(command, env=None):
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def rate(qatflow, work):
    folder = os.path.join(work, "jpegs-500x375")
    write_jpegs(folder, 512, (500, 375))
    data = run_json([qatflow, "bench-data", "--dataset", folder, *NORMALIZE, "--batch", "32", "--batches", "8", "--threads", "2", "--json"])
    model = os.path.join(work, "mnv2-224-3ch.onnx")
    bench_int8_ort.mobilenet_v2_224(model, 3)
    env = dict(os.environ, QATFLOW_DATASET_MEMORY_MB="0")  # the QAT run streams its batches from the JPEGs
    qat = run_json([qatflow, "bench-train", model, "--qat", "--batch", "32", "--threads", "2", "--warmup", "1", "--steps", "3",
                    "--init-images", "32", "--dataset", folder, *NORMALIZE, "--json"], env=env)
    print(f"JPEG 500x375 -> resize 256 -> crop 224, 2 threads: {data['images_per_second']:.0f} images/s decoded and preprocessed")
    print(f"QAT step, MobileNetV2-224 (3 channels), batch 32, 2 threads, fed by the streaming reader: "
          f"{qat['mean_step_ms']:.0f} ms per step = {qat['images_per_second']:.1f} images/s")
    print(f"decode rate / QAT step rate: {data['images_per_second'] / qat['images_per_second']:.1f}x (>= 1: the reader keeps up; "
          f"it runs ahead on a prefetch thread, so at this ratio it takes {100 * qat['images_per_second'] / data['images_per_second']:.0f} % "
          f"of the decode capacity)")


def tiny_model(path):
    """Conv 3->8 (4x4, stride 4) -> ReLU -> global average pool -> Gemm 8->10: cheap at 224, so eval is data-bound."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 4, 4)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(8, np.float32), "b"),
             numpy_helper.from_array(rng.normal(0, 0.1, (10, 8)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(10, np.float32), "fcb")]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "tiny224", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def peak_memory(qatflow, model, folder, images, stream):
    env = dict(os.environ, QATFLOW_DATASET_MEMORY_MB="0") if stream else None
    result = subprocess.run(["/usr/bin/time", "-f", "%M %e", qatflow, "eval", model, "--dataset", folder, *NORMALIZE,
                             "--images", str(images), "--batch", "100", "--quiet", "--json"], check=True, capture_output=True, text=True, env=env)
    kilobytes, seconds = result.stderr.strip().splitlines()[-1].split()
    return int(kilobytes) / 1024, float(seconds), json.loads(result.stdout.strip().splitlines()[-1])["images"]


def memory(qatflow, work, count):
    folder = os.path.join(work, f"jpegs-256-{count}")
    write_jpegs(folder, count, (256, 256))
    model = os.path.join(work, "tiny224.onnx")
    tiny_model(model)
    # A set whose floats fit the memory budget (1 GiB) is decoded once into memory; a larger one streams.
    for images, stream in ((1000, False), (1000, True), (count, False)):
        megabytes, seconds, evaluated = peak_memory(qatflow, model, folder, images, stream)
        floats = images * 3 * 224 * 224 * 4 / 2**30
        how = "streamed" if stream or floats > 1 else "held in memory"
        print(f"eval over {evaluated:,} JPEGs (256x256 -> crop 224), {how}: peak RSS {megabytes:.0f} MB in {seconds:.0f} s "
              f"({evaluated / seconds:.0f} images/s); as floats the set is {floats:.1f} GiB")


if __name__ == "__main__":
    mode, qatflow, work = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "rate":
        rate(qatflow, work)
    elif mode == "memory":
        memory(qatflow, work, int(sys.argv[4]) if len(sys.argv) > 4 else 50000)
    else:
        sys.exit(f"unknown mode {mode}; expected rate or memory")
