"""Do vectorisation flags help the fused kernel? (issue 42, item 5). Builds csrc/scale_shift_relu.cpp twice, with the
package's flags (-O3 -ffp-contract=off) and with -march=native added, and times, in one process, interleaved:
the kernel's forward + backward on tiny's three stage shapes, and a whole training step of microdensenet_cifar_tiny
(batch 128, fp32, channels_last) with each build. Run alone on an idle machine:

    .venv/bin/python docs/results/archive/scripts/vectorisation_flags.py
"""
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import timm
from torch.utils.cpp_extension import load

import microdense
import microdense.layers.fused as fused

FLAGS = {"package": ["-O3", "-ffp-contract=off"], "march=native": ["-O3", "-ffp-contract=off", "-march=native"]}
ROUNDS = int(os.environ.get("ROUNDS", 5))
SHAPES = [((64, 16, 16), 32), ((128, 32, 32), 16), ((256, 64, 64), 8)]  # channels of the parts, side, at batch 128


def build(label: str, flags):
    folder = Path(tempfile.gettempdir()) / f"microdense-vec-{label.replace('=', '-')}"  # reused by a rerun
    folder.mkdir(exist_ok=True)
    return load(f"ssr_{label.replace('=', '_')}", [str(fused.SOURCE)], extra_cflags=flags, build_directory=str(folder))


def kernel_step(module, feats, scale, shift, grad) -> None:
    module.forward(feats, scale, shift)
    module.backward(grad, feats, scale, shift)


def timed(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    modules = {label: build(label, flags) for label, flags in FLAGS.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {torch.backends.cpu.get_cpu_capability()}")
    for parts, side in SHAPES:
        feats = [torch.randn(128, c, side, side).contiguous(memory_format=torch.channels_last) for c in parts]
        total = sum(parts)
        scale, shift = torch.randn(total), torch.randn(total)
        grad = torch.randn(128, total, side, side).contiguous(memory_format=torch.channels_last)
        outs = {k: m.forward(feats, scale, shift) for k, m in modules.items()}
        same = torch.equal(*outs.values())
        times = {k: [] for k in modules}
        for _ in range(ROUNDS):
            for k, m in modules.items():
                kernel_step(m, feats, scale, shift, grad)
                times[k].append(timed(lambda: kernel_step(m, feats, scale, shift, grad), 20))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(f"kernel {parts} at {side}x{side}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
              + f"; ratio {med['package'] / med['march=native']:.3f}; outputs identical: {same}")

    model = timm.create_model("microdensenet_cifar_tiny").to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(128, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    times = {k: [] for k in modules}
    for _ in range(ROUNDS):
        for k, m in modules.items():
            fused.fused_kernels = lambda m=m: m
            train_step()
            times[k].append(timed(train_step, 5))
    med = {k: statistics.median(v) for k, v in times.items()}
    print("tiny train step, batch 128: " + ", ".join(f"{k} {128 / v:.1f} img/s" for k, v in med.items())
          + f"; ratio {med['package'] / med['march=native']:.3f}")


if __name__ == "__main__":
    assert microdense
    main()
