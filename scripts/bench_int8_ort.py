"""Int8 inference: qatflow's Int8Executor (via `qatflow bench --engine int8`) against ONNX Runtime's int8 (QDQ, U8S8:
uint8 activations, int8 per-channel weights, MinMax calibration — the setup of /work/shared/PEERS.md), same machine,
same run. Also prints each engine's int8 speed-up over its own float.

  bench_int8_ort.py fmnist QATFLOW WORK
      MobileNetV2-FMNIST (models/mobilenetv2-fmnist.onnx), batch 1 and 32, 1 and 2 threads. Our int8 model
      is WORK/int8.safetensors (written by scripts/bench.sh); ORT quantizes the ONNX file on 300 training images.
  bench_int8_ort.py mnv2-224 QATFLOW WORK
      MobileNetV2-224 (width 1.0, random weights) at batch 1, 1 thread, quantized by `qatflow quantize` (through a
      manifest, see below) and by ORT on the same 32 calibration images.
"""
import gzip, json, os, subprocess, sys, time
import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

FMNIST_MODEL = "models/mobilenetv2-fmnist.onnx"
MEAN, STD = 0.2860, 0.3530


def fashion_mnist_train(count, pad):
    """The first `count` training images with the project's preprocessing: zero-pad by `pad` pixels on each side,
    then x = (pixel/255 - mean)/std, NCHW with one channel (as the Datasets target does)."""
    root = next(d for d in ("datasets/fashion-mnist", "/usr/share/datasets/fashion-mnist")
                if os.path.exists(os.path.join(d, "train-images-idx3-ubyte.gz")))
    with gzip.open(os.path.join(root, "train-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:count]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad))).astype(np.float32)
    return ((padded / 255.0 - MEAN) / STD).astype(np.float32)[:, None]


class ArrayReader(CalibrationDataReader):
    def __init__(self, name, images, batch):
        self.batches = iter([{name: images[i:i + batch]} for i in range(0, len(images), batch)])

    def get_next(self):
        return next(self.batches, None)


def ort_quantize(float_path, out_path, images, batch):
    """PEERS.md's recipe: quant_pre_process (folds BN), then quantize_static QDQ, per-channel, U8S8, MinMax."""
    pre = out_path.replace(".onnx", ".pre.onnx")
    quant_pre_process(float_path, pre)
    name = onnx.load(pre).graph.input[0].name
    quantize_static(pre, out_path, ArrayReader(name, images, batch), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)


def ort_ms(model, threads, batch, repeats, input_shape):
    """(median, min) ms of one run; session options as scripts/bench_float.py."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal([batch] + input_shape, dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(5):
        session.run(None, {name: x})
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: x})
        samples.append((time.perf_counter() - start) * 1000)
    return float(np.median(samples)), float(np.min(samples))


def our_ms(qatflow, model, engine, threads, batch, repeats):
    """(median, min) ms from `qatflow bench --json`."""
    result = json.loads(subprocess.check_output([qatflow, "bench", model, "--engine", engine, "--threads", str(threads),
                                                 "--batch", str(batch), "--repeats", str(repeats), "--json"]))
    return result["median_ms"], result["min_ms"]


ROUNDS = 3


def measure(qatflow, ours_int8, ours_float, ort_int8, ort_float, threads, batch, repeats, input_shape):
    """The four engines in alternating rounds (other work on the machine comes and goes); per engine the lowest
    median and the lowest minimum over the rounds."""
    best = [(float("inf"), float("inf"))] * 4
    for _ in range(ROUNDS):
        times = [our_ms(qatflow, ours_int8, "int8", threads, batch, repeats),
                 ort_ms(ort_int8, threads, batch, repeats, input_shape),
                 our_ms(qatflow, ours_float, "float", threads, batch, repeats),
                 ort_ms(ort_float, threads, batch, repeats, input_shape)]
        best = [(min(b[0], t[0]), min(b[1], t[1])) for b, t in zip(best, times)]
    return (threads, batch, *best)


def print_table(rows):
    """ms as median/min; every ratio from medians, then from minimums in parentheses."""
    print(f"{'threads':>7} {'batch':>5} | {'ours int8 ms':>14} {'ORT U8S8 ms':>14} {'ours img/s':>10} {'ORT img/s':>9} "
          f"{'ours/ORT speed':>15} | {'ours float ms':>14} {'ours int8/float':>15} | {'ORT float ms':>14} {'ORT int8/float':>15}")
    cell = lambda t: f"{t[0]:.3f}/{t[1]:.3f}"
    ratio = lambda slow, fast: f"{slow[0] / fast[0]:.2f}x ({slow[1] / fast[1]:.2f}x)"
    for threads, batch, ours_q, ort_q, ours_f, ort_f in rows:
        print(f"{threads:>7} {batch:>5} | {cell(ours_q):>14} {cell(ort_q):>14} {batch * 1000 / ours_q[0]:>10.0f} "
              f"{batch * 1000 / ort_q[0]:>9.0f} {ratio(ort_q, ours_q):>15} | {cell(ours_f):>14} {ratio(ours_f, ours_q):>15} | "
              f"{cell(ort_f):>14} {ratio(ort_f, ort_q):>15}")
    print(f"(ms: median/min per run, best of {ROUNDS} alternating rounds; img/s from the median. ours/ORT speed > 1: our "
          "int8 engine is faster; int8/float: each engine's int8 speed-up over its own float. Ratios from medians, "
          "from minimums in parentheses.)")


def fmnist(qatflow, work):
    start = time.perf_counter()
    ort_int8 = os.path.join(work, "ort-u8s8.onnx")
    ort_quantize(FMNIST_MODEL, ort_int8, fashion_mnist_train(300, 2), 50)
    print(f"ORT quantize_static: {time.perf_counter() - start:.1f} s; files: float {os.path.getsize(FMNIST_MODEL) / 1e6:.2f} MB, "
          f"ORT U8S8 {os.path.getsize(ort_int8) / 1e6:.2f} MB, ours {os.path.getsize(os.path.join(work, 'int8.safetensors')) / 1e6:.2f} MB")
    print_table([measure(qatflow, os.path.join(work, "int8.safetensors"), os.path.join(work, "float.safetensors"),
                         ort_int8, FMNIST_MODEL, threads, batch, 200 if batch == 1 else 30, [1, 32, 32])
                 for threads in (1, 2) for batch in (1, 32)])


def mobilenet_v2_224(path, channels):
    """MobileNetV2-224 from Tests/ONNXTests/Scripts/make_models.py (random weights, BN kept), with `channels` input
    channels (the stem's weights are drawn for that many)."""
    sys.path.insert(0, "Tests/ONNXTests/Scripts")
    import make_models

    class Capture:
        def model(self, name, nodes, inputs, outputs, initializers=(), opset=13, input_shapes=None, tags=()):
            self.args = (nodes, inputs, outputs, list(initializers), opset)

    capture = Capture()
    make_models.mobilenet_v2(capture)
    nodes, inputs, outputs, initializers, opset = capture.args
    if channels != 3:
        inputs = [make_models.value("input", ["N", channels, 224, 224])]
        initializers = [make_models.tensor("features.0.w", make_models.floats(32, channels, 3, 3, scale=np.sqrt(2.0 / (9 * channels))))
                        if i.name == "features.0.w" else i for i in initializers]
    graph = helper.make_graph(nodes, "mobilenetv2_224", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = make_models.ir_version_for(opset)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def mnv2_224(qatflow, work):
    # `qatflow quantize` calibrates on a dataset, and our datasets (IDX) have one channel: Fashion-MNIST padded
    # 28→224 here. So the model compared takes 1×224×224: its stem has 3.6 M MACs instead of 10.8 M, 2.4 % of the
    # model's ~300 M fewer. ORT on the standard 3-channel model is printed below as a cross-check.
    float_path = os.path.join(work, "mnv2-224-1ch.onnx")
    mobilenet_v2_224(float_path, 1)
    calibration = 32
    manifest = os.path.join(work, "mnv2-224.yaml")
    with open(manifest, "w") as f:
        f.write(f"""name: bench-mnv2-224
datasets:
  calibration: {{source: fashion-mnist, split: train, limit: {calibration}, pad: 98, root: {os.path.abspath("datasets/fashion-mnist")}}}
stages:
  convert:
    uses: convert
    with: {{model: {float_path}}}
    outputs: {{model: mnv2-224-1ch.safetensors}}
  quantize:
    uses: quantize
    needs: [convert]
    with: {{dataset: calibration, images: {calibration}, method: max, batch: 8}}
    outputs: {{model: mnv2-224-1ch-int8.safetensors}}
""")
    start = time.perf_counter()
    subprocess.check_call([qatflow, "run", manifest, "--project", work, "--cache-dir", os.path.join(work, "cache-224"),
                           "--quiet"], stdout=subprocess.DEVNULL)
    ours_quantize = time.perf_counter() - start
    start = time.perf_counter()
    ort_int8 = os.path.join(work, "mnv2-224-1ch-ort-u8s8.onnx")
    ort_quantize(float_path, ort_int8, fashion_mnist_train(calibration, 98), 8)
    print(f"quantize ({calibration} calibration images): qatflow (method max) {ours_quantize:.1f} s, "
          f"ORT quantize_static {time.perf_counter() - start:.1f} s")
    ours_int8 = os.path.join(work, "mnv2-224-1ch-int8.safetensors")
    print_table([measure(qatflow, ours_int8, float_path, ort_int8, float_path, 1, 1, 30, [1, 224, 224])])
    # Cross-check: ORT on the standard 3-channel model (same random weights elsewhere would need the same draw;
    # these are fresh ones, which does not matter for speed).
    float3 = os.path.join(work, "mnv2-224-3ch.onnx")
    mobilenet_v2_224(float3, 3)
    ort3 = os.path.join(work, "mnv2-224-3ch-ort-u8s8.onnx")
    rng = np.random.default_rng(1)
    ort_quantize(float3, ort3, rng.standard_normal((calibration, 3, 224, 224), dtype=np.float32), 8)
    int8_3, float_3 = ort_ms(ort3, 1, 1, 30, [3, 224, 224]), ort_ms(float3, 1, 1, 30, [3, 224, 224])
    print(f"cross-check, standard 3×224×224 input, ORT only (1 round): U8S8 {int8_3[0]:.3f}/{int8_3[1]:.3f} ms, "
          f"float {float_3[0]:.3f}/{float_3[1]:.3f} ms (batch 1, 1 thread)")


if __name__ == "__main__":
    which, qatflow, work = sys.argv[1], sys.argv[2], sys.argv[3]
    {"fmnist": fmnist, "mnv2-224": mnv2_224}[which](qatflow, work)
