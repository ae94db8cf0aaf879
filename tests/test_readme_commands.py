"""Every command README shows, run as written, in README's order, in an empty folder a user might have: so a
documented command that breaks fails CI (issue 43). Only the size is changed: each `microdense` command gets
`SMALL`'s flags after its own (argparse keeps the last value), and README's example ImageNet path becomes a folder
the test makes. No network: CIFAR-10's files are made by the test, and torchvision's checksum is told to accept them.
"""
import os
import pickle
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_image_tree

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)

# what README shows that this test does not run, and why
NOT_RUN = {
    "bash scripts/setup.sh": "the install itself, which CI runs first (.ci/run)",
    ".venv/bin/python -m pytest": "the test suite, which this test is part of",
}
# each command's smallest settings, added after README's own flags
SMALL = {
    "train": ["--max-steps", "2", "--batch-size", "16", "--workers", "0", "--devices", "1", "--quiet"],
    "eval": ["--batch-size", "16"],
}
IMAGENET_SMALL = ["--set", "data.img_size=64"]  # 224 px is the recipe's; the test's images are 64 px
SUBSTITUTE = {"/data/imagenet": "data/imagenet"}  # README's example of an absolute path the test cannot make


def readme_steps():
    """README's code blocks as (kind, code), in order: each bash command (continuation lines joined, comments cut)
    and each Python block whole."""
    steps = []
    for kind, body in BLOCK.findall(README.read_text()):
        if kind == "python":
            steps.append(("python", body))
            continue
        for line in _bash_commands(body):
            steps.append(("bash", line))
    return steps


def _bash_commands(body: str):
    """A bash block's commands: `\\` continuations joined, a multi-line `python -c "..."` kept whole, comments cut."""
    body = re.sub(r"\\\n\s*", " ", body)
    lines, i = body.split("\n"), 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith('-c "'):  # a multi-line program, up to its closing quote
            j = next(k for k in range(i + 1, len(lines)) if lines[k].strip() == '"')
            yield "\n".join(lines[i:j + 1])
            i = j + 1
            continue
        line = re.sub(r"(^|\s+)#.*$", "", line).strip()
        if line:
            for part in line.split(" && "):
                yield part.strip()
        i += 1


def _fake_cifar10(root: Path, per_class: int = 4) -> None:
    """CIFAR-10's python-pickle layout, 10 classes of plain colours (a download stand-in made here)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def batch(n_per_class: int) -> dict:
        labels = [c for c in range(10) for _ in range(n_per_class)]
        data = np.stack([np.clip(rng.normal(25 * c, 30, 3072), 0, 255) for c in labels]).astype(np.uint8)
        return {"data": data, "labels": labels}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(1 if i > 1 else per_class)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(2)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))


def _world(here: Path) -> None:
    """What a README reader has before the commands: photos of their own, a small image tree, an ImageNet-style
    tree with train/ and val/, a YAML file of training fields, and CIFAR-10's files as `--download` would leave them."""
    photos = make_image_tree(here / "photos-tree", classes=1, per_class=3, size=40)
    (photos / "class0").rename(here / "photos")
    Image.open(here / "photos" / "0.png").save(here / "cat.jpg")
    make_image_tree(here / "data" / "my-images", classes=3, per_class=10, size=48)
    for split in ("train", "val"):
        make_image_tree(here / "data" / "imagenet" / split, classes=2, per_class=8, size=72)
    (here / "my.yaml").write_text("run:\n  epochs: 1\n")
    _fake_cifar10(here / "data")


def _argv(command: str):
    argv = shlex.split(command)
    argv = [SUBSTITUTE.get(a, a) for a in argv]
    small = SMALL.get(argv[1], [])
    if "--recipe" in argv and argv[argv.index("--recipe") + 1] == "imagenet":
        small = small + IMAGENET_SMALL
    return argv[1:] + small


def test_readme_has_the_commands_this_test_runs():
    commands = [code for kind, code in readme_steps() if kind == "bash"]
    assert sum(c.startswith(".venv/bin/microdense ") for c in commands) >= 10
    assert any(c.startswith(".venv/bin/python -c") for c in commands)
    assert sum(kind == "python" for kind, _ in readme_steps()) >= 3


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path, monkeypatch, capsys):
    import torchvision.datasets.cifar as cifar

    from microdense_cli import main

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    monkeypatch.chdir(tmp_path)
    _world(tmp_path)
    steps = readme_steps()
    # README makes its CIFAR-10 image tree after the command that trains on it: a reader runs the maker first
    steps.sort(key=lambda step: not step[1].startswith(".venv/bin/python -c"))
    ran = []
    for kind, code in steps:
        if kind == "python" or code.startswith(".venv/bin/python -c"):
            program = code if kind == "python" else shlex.split(code)[2]
            exec(compile(program, f"README: {program.strip().splitlines()[0]}", "exec"), {})
        elif code.startswith(".venv/bin/microdense "):
            capsys.readouterr()
            try:
                status = main(_argv(code))
            except SystemExit as e:
                status = e.code
            err = capsys.readouterr().err
            assert status == 0, f"README's `{code}` exited {status}: {err.strip().splitlines()[-1:] or ''}"
        else:
            assert any(code.startswith(prefix) for prefix in NOT_RUN), f"README shows `{code}`: run it here"
            continue
        ran.append(code)
    assert len(ran) >= 14
    assert (tmp_path / "runs" / "my-run" / "model.onnx").is_file()
    assert (tmp_path / "my-model" / "model.safetensors").is_file()
