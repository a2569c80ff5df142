"""Where our int8 engine's time goes, per layer type, next to our float engine's split (same model, batch, threads).

  profile_int8.py QATFLOW INT8_MODEL FLOAT_MODEL BATCH THREADS

The int8 executor has no QATFLOW_PROFILE hook (only FloatExecutor reports per-step times), so the int8 split comes
from sampling: `perf record -g` (cpu-clock, 4 kHz) on `qatflow bench`, then the inclusive samples of each step
type's `run` (Int8GEMMStep, Int8DepthwiseStep, …) as a share of `Int8Executor.run`. The float split is the
QATFLOW_PROFILE=1 table of `qatflow bench` (calling-thread CPU time per step kind). Both in CPU ms per run.
"""
import os, re, shutil, subprocess, sys, tempfile

# Int8 step type (Swift type name) → layer type; the GEMM step serves 1×1 convolutions and the classifier (Gemm).
# A step type not listed here is reported under its own name.
INT8_STEPS = {
    "Int8GEMMStep": "conv 1×1 + FC (GEMM)",
    "Int8GEMMFloatOutputStep": "conv 1×1 + FC (GEMM)",
    "Int8DepthwiseStep": "conv depthwise 3×3",
    "Int8ConvolutionStep": "conv 3×3 full (im2col + GEMM)",
    "Int8AddStep": "residual add",
    "Int8GlobalAveragePoolStep": "global average pool",
    "Int8ReorderStep": "flatten/reorder",
    "Int8QuantizeStep": "quantize input (float → u8)",
    "Int8DequantizeStep": "dequantize output (u8 → float)",
    "Int8FloatNodeStep": "float fallback nodes",
}


def float_type(label):
    """FloatExecutor's step label → the same layer types."""
    if label.startswith("Conv 1x1") or label == "Gemm":
        return "conv 1×1 + FC (GEMM)"
    if label.startswith("Conv depthwise"):
        return "conv depthwise 3×3"
    if label.startswith("Conv"):
        return "conv 3×3 full (im2col + GEMM)"
    return {"Add": "residual add", "GlobalAveragePool": "global average pool", "Flatten": "flatten/reorder"}.get(label, label)


def float_split(qatflow, model, batch, threads, repeats):
    run = subprocess.run([qatflow, "bench", model, "--engine", "float", "--batch", str(batch), "--threads", str(threads),
                          "--repeats", str(repeats)], env=dict(os.environ, QATFLOW_PROFILE="1"),
                         capture_output=True, text=True, check=True)
    split = {}
    for line in run.stderr.splitlines():
        match = re.match(r"(.+?)\s+wall\s+[\d.]+ ms/run\s+CPU\s+([\d.]+) ms/run", line)
        if match:
            split[float_type(match.group(1).strip())] = split.get(float_type(match.group(1).strip()), 0) + float(match.group(2))
    return split


def int8_split(qatflow, model, batch, threads, repeats):
    """(CPU ms per run by layer type, top self-time symbols) from perf, or None when perf cannot sample here."""
    if shutil.which("perf") is None:
        return None
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "perf.data")
        record = subprocess.run(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-g", "-o", data, "--", qatflow, "bench",
                                 model, "--engine", "int8", "--batch", str(batch), "--threads", str(threads),
                                 "--repeats", str(repeats)], capture_output=True, text=True)
        if record.returncode != 0:
            return None
        report = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "symbol", "--stdio", "-g", "none"],
                                capture_output=True, text=True).stdout
    runs = repeats + 5  # `qatflow bench` runs 5 warm-up passes first
    event_count = float(re.search(r"Event count \(approx\.\): (\d+)", report).group(1))  # cpu-clock: nanoseconds
    children, selfs = {}, {}
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+([\d.]+)%\s+\[\.\]\s+(\S+)", line)
        if match:
            children[match.group(3)] = float(match.group(1))
            selfs[match.group(3)] = float(match.group(2))
    to_ms = lambda percent: percent / 100 * event_count / 1e6 / runs
    total = max((p for s, p in children.items() if "Int8ExecutorC3run" in s), default=0)
    # A step's `run`, its protocol witness and specialisations nest: per step type the outermost (largest) share.
    step_shares = {}
    for symbol, percent in children.items():
        match = re.search(r"(\d+)(Int8\w*Step)V.*run2in7threads", symbol)
        if match and int(match.group(1)) == len(match.group(2)):
            step_shares[match.group(2)] = max(step_shares.get(match.group(2), 0), percent)
    split = {}
    for swift_type, percent in step_shares.items():
        layer_type = INT8_STEPS.get(swift_type, swift_type)
        split[layer_type] = split.get(layer_type, 0) + to_ms(percent)
    hottest = sorted(selfs.items(), key=lambda item: -item[1])[:6]
    return split, to_ms(total), [(symbol, to_ms(percent)) for symbol, percent in hottest]


def demangled(symbols):
    """Swift symbols made readable with swift-demangle when it is on PATH (or next to `swift`); others unchanged."""
    tool = shutil.which("swift-demangle")
    if tool is None and shutil.which("swift"):
        tool = os.path.join(os.path.dirname(os.path.realpath(shutil.which("swift"))), "swift-demangle")
    if tool is None or not os.path.exists(tool):
        return symbols
    result = subprocess.run([tool, "--simplified", "--compact"], input="\n".join(symbols), capture_output=True, text=True)
    lines = result.stdout.splitlines()
    return lines if result.returncode == 0 and len(lines) == len(symbols) else symbols


def main():
    qatflow, int8_model, float_model, batch, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    repeats = 60
    measured = int8_split(qatflow, int8_model, batch, threads, repeats)
    floats = float_split(qatflow, float_model, batch, threads, 30)
    if measured is None:
        print("int8 split: perf is not available or cannot sample here; float split only")
        for layer_type, ms in sorted(floats.items(), key=lambda item: -item[1]):
            print(f"  {layer_type:<34} float {ms:8.3f} ms")
        return
    split, total, hottest = measured
    if total == 0 or not split:
        print("int8 split: no samples under Int8Executor.run / Int8*Step.run (renamed types?); hottest functions only")
    float_total = sum(floats.values())
    print(f"{'layer type (CPU ms per run)':<34} {'int8 ms':>8} {'share':>6} | {'float ms':>8} {'share':>6} | {'int8 speed-up':>13}")
    for layer_type in sorted(set(split) | set(floats), key=lambda t: -split.get(t, 0)):
        q, f = split.get(layer_type, 0), floats.get(layer_type, 0)
        speedup = f"{f / q:12.2f}x" if q > 0 and f > 0 else f"{'-':>13}"
        print(f"{layer_type:<34} {q:8.3f} {100 * q / total:5.1f}% | {f:8.3f} {100 * f / max(float_total, 1e-9):5.1f}% | {speedup}")
    print(f"{'total':<34} {total:8.3f} {'':>6} | {float_total:8.3f} {'':>6} | {float_total / total:12.2f}x")
    print("(int8: perf samples under each step type's run, total = Int8Executor.run; float: QATFLOW_PROFILE=1 table)")
    names = demangled([symbol for symbol, _ in hottest])
    print("hottest int8 functions (self CPU ms per run): " + ", ".join(f"{name} {ms:.3f}" for name, (_, ms) in zip(names, hottest)))


if __name__ == "__main__":
    main()
