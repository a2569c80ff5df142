"""Training throughput: qatflow's trainer (`qatflow bench-train`) against PyTorch on the same model, in one run.

  bench_train_torch.py QATFLOW MODEL [--batch 128] [--threads 2] [--steps 10] [--warmup 2] [--rounds 3]

Run with a Python that has torch and onnx (`make venv-torch` makes .venv-torch). MODEL is
models/mobilenetv2-fmnist.onnx: PyTorch gets the same network, built here with torchvision's module layout and
loaded with the ONNX file's initializers by name (a strict load, so every tensor's name and shape must match — that
is the check that both sides train the same architecture). PyTorch trains channels-last (its fastest CPU layout for
this model), SGD with momentum 0.9 and weight decay 4e-5 at lr 0.01, as `qatflow bench-train` does; both take a
forward in training mode, cross-entropy, backward and an optimizer step per step on batches of Fashion-MNIST-shaped
inputs (PyTorch: random normal; ours: real batches from a prefetch thread, not part of the step time).
The two alternate for --rounds rounds, because load on a shared machine comes and goes; the ratio is of the two
medians over all rounds' steps.
"""
import argparse, json, statistics, subprocess, sys, time

import onnx
import onnx.numpy_helper
import torch
from torch import nn


def make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_relu6(inputs, outputs, kernel, stride, groups=1):
    return nn.Sequential(nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(outputs), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inputs, outputs, stride, expansion):
        super().__init__()
        hidden = int(round(inputs * expansion))
        self.use_residual = stride == 1 and inputs == outputs
        layers = [conv_bn_relu6(inputs, hidden, 1, 1)] if expansion != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, outputs, 1, 1, 0, bias=False), nn.BatchNorm2d(outputs)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2FMNIST(nn.Module):
    """Issue #4's model: width 0.5, one 32×32 input channel, stem stride 1, last conv 1280, 10 classes."""
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, width=0.5, classes=10):
        super().__init__()
        channels = make_divisible(32 * width)
        features = [conv_bn_relu6(1, channels, 3, 1)]
        for expansion, c, n, s in self.SETTINGS:
            outputs = make_divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(channels, outputs, s if i == 0 else 1, expansion))
                channels = outputs
        features.append(conv_bn_relu6(channels, 1280, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


def load_onnx_weights(model, path):
    """The ONNX file's initializers into `model`, strictly: every parameter and running statistic must be there."""
    tensors = {init.name: torch.from_numpy(onnx.numpy_helper.to_array(init).copy())
               for init in onnx.load(path).graph.initializer}
    state = model.state_dict()
    missing = [name for name in state if not name.endswith("num_batches_tracked") and name not in tensors]
    wrong = [f"{name} {tuple(tensors[name].shape)} vs {tuple(state[name].shape)}"
             for name in state if name in tensors and tensors[name].shape != state[name].shape]
    if missing or wrong:
        sys.exit(f"{path}: not the MobileNetV2-FMNIST layout this benchmark builds; missing {missing[:5]}, shapes {wrong[:5]}")
    model.load_state_dict({name: tensors.get(name, value) for name, value in state.items()})
    return sum(t.numel() for name, t in state.items() if not name.endswith("num_batches_tracked"))


def torch_steps(model, batch, warmup, steps):
    """Milliseconds of each timed training step."""
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5)
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randn(batch, 1, 32, 32, generator=generator).contiguous(memory_format=torch.channels_last)
              for _ in range(4)]
    labels = [torch.randint(0, 10, (batch,), generator=generator) for _ in range(4)]
    loss_function = nn.CrossEntropyLoss()
    samples = []
    for step in range(warmup + steps):
        x, y = inputs[step % 4], labels[step % 4]
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_function(model(x), y)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def ours_steps(qatflow, path, batch, threads, warmup, steps):
    run = json.loads(subprocess.check_output([qatflow, "bench-train", path, "--batch", str(batch), "--threads",
                                              str(threads), "--warmup", str(warmup), "--steps", str(steps), "--json"]))
    return run["step_ms"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("qatflow")
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MobileNetV2FMNIST().to(memory_format=torch.channels_last)
    tensors = load_onnx_weights(model, args.model)
    print(f"PyTorch {torch.__version__} ({args.threads} threads, channels-last, oneDNN {torch.backends.mkldnn.is_available()}): "
          f"{args.model} loaded by name, {tensors:,} tensor elements")

    ours_all, theirs_all = [], []
    print(f"{'round':>5} {'qatflow ms/step':>16} {'PyTorch ms/step':>16} {'qatflow img/s':>14} {'PyTorch img/s':>14} {'ratio':>6}")
    for round_index in range(1, args.rounds + 1):
        ours = ours_steps(args.qatflow, args.model, args.batch, args.threads, args.warmup, args.steps)
        theirs = torch_steps(model, args.batch, args.warmup, args.steps)
        ours_all += ours
        theirs_all += theirs
        o, t = statistics.median(ours), statistics.median(theirs)
        print(f"{round_index:>5} {o:>16.1f} {t:>16.1f} {args.batch * 1000 / o:>14.0f} {args.batch * 1000 / t:>14.0f} {t / o:>5.2f}x")
    o, t = statistics.median(ours_all), statistics.median(theirs_all)
    print(f"all rounds, median step: qatflow {o:.1f} ms ({args.batch * 1000 / o:.0f} img/s), PyTorch {t:.1f} ms "
          f"({args.batch * 1000 / t:.0f} img/s): qatflow trains {t / o:.2f}x PyTorch's images/s (target >= 2x)")


if __name__ == "__main__":
    main()
