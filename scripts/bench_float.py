"""Float inference: qatflow's FloatExecutor (via `qatflow bench`) against ONNX Runtime, same machine, same run."""
import json, subprocess, sys, time
import numpy as np
import onnxruntime as ort

qatflow, model, work = sys.argv[1], sys.argv[2], sys.argv[3]

def ort_ms(threads, batch, repeats):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 1, 32, 32), dtype=np.float32)
    name = session.get_inputs()[0].name
    for _ in range(5):
        session.run(None, {name: x})
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: x})
        samples.append((time.perf_counter() - start) * 1000)
    return float(np.median(samples))

print(f"{'threads':>7} {'batch':>5} {'qatflow ms':>11} {'ORT ms':>8} {'qatflow img/s':>14} {'ORT img/s':>10} {'ORT/qatflow':>12}")
for threads in (1, 2):
    for batch in (1, 32):
        repeats = 200 if batch == 1 else 30
        ours = json.loads(subprocess.check_output([qatflow, "bench", model, "--threads", str(threads),
                                                   "--batch", str(batch), "--repeats", str(repeats), "--json"]))
        theirs = ort_ms(threads, batch, repeats)
        print(f"{threads:>7} {batch:>5} {ours['median_ms']:>11.3f} {theirs:>8.3f} {batch * 1000 / ours['median_ms']:>14.0f} "
              f"{batch * 1000 / theirs:>10.0f} {theirs / ours['median_ms']:>12.2f}")
