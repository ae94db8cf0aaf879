"""Shared fixtures: small image trees made by the tests, so nothing depends on downloaded data."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image



def pytest_configure(config):
    """Under pytest-xdist, one compute thread per worker (and per subprocess a test starts): workers that each
    spread over every core spin against one another, which made the suite several times slower on 2 cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch
        torch.set_num_threads(1)


SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg" / "train"


def make_image_tree(root: Path, classes: int = 4, per_class: int = 12, size: int = 16, seed: int = 0) -> Path:
    """root/<class>/<i>.png: each class a distinct colour plus noise, so a model can learn it."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        colour = rng.integers(0, 256, 3)
        for i in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return make_image_tree(tmp_path / "images")


@pytest.fixture
def cli_here(capsys):
    """`microdense ARGS` run in this process, as a finished process: its exit status, stdout and stderr. A fresh
    interpreter pays seconds importing torch and Lightning, so refusals are checked here and a few tests keep the
    real process."""
    from microdense_cli import main

    def run(*args: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's refusals exit
            code = e.code
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)
    return run


@pytest.fixture
def shared_cifar() -> Path:
    if not SHARED_CIFAR.is_dir():
        pytest.skip(f"real CIFAR-10 images not found at {SHARED_CIFAR}")
    return SHARED_CIFAR


def fp32_noise(model, x) -> float:
    """How far `model`'s float32 logits for `x` lie from its own float64 computation: the rounding floor below
    which no two float32 implementations (folded, exported) can be expected to agree."""
    import copy

    import torch
    with torch.no_grad():
        return float((model(x).double() - copy.deepcopy(model).double()(x.double())).abs().max())


def modules_loaded_by(code: str, names) -> list:
    """Which of the top-level modules `names` a fresh interpreter has imported after running `code`."""
    import subprocess
    import sys
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {tuple(names)!r} if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import ast
    return ast.literal_eval(proc.stdout.strip().splitlines()[-1])


def conv_channel_counts(model) -> list:
    """Every channel count a model's convolutions and norms see, but the image channels its stem reads."""
    import torch
    counts = []
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            counts += [m.out_channels] + ([m.in_channels] if m.in_channels != 3 else [])
        elif isinstance(m, torch.nn.BatchNorm2d):
            counts.append(m.num_features)
    return counts


def cpu_flags() -> set:
    """This CPU's instruction-set flags (/proc/cpuinfo), empty where it cannot tell."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()
