"""The prepared scripts: `scripts/gpu-check.sh` is valid bash and, without a GPU, stops at once and says why; a
study's decision script gives the verdicts its pre-registered rule states."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_scripts_are_valid_bash(script):
    proc = subprocess.run(["bash", "-n", str(SCRIPTS / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here: the script would run the whole check")
def test_gpu_check_stops_at_once_without_a_gpu(tmp_path):
    out = tmp_path / "gpu-check"
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu-check.sh")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PY": sys.executable, "OUT": str(out)})
    assert proc.returncode == 3
    assert proc.stderr.strip() == ("gpu-check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); "
                                   "run this on a GPU machine")
    assert not out.exists()


def _script_module(name: str):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(folder: Path, rows) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(
        json.dumps({"entry": e, "seed": s, "val_top1": v}) + "\n" for e, s, v in rows))
    return str(folder)


WORSE_PER_EPOCH = "pre-activation stays (post-activation is worse per epoch than two seeds can resolve)"
TRAILS = "pre-activation stays (post-activation trails at equal time)"
POST = "post-activation becomes the default"


@pytest.mark.parametrize("post_epochs, post_timed, post_rate, outcome", [
    ((0.80, 0.79), (0.75, 0.75), 100.0, WORSE_PER_EPOCH),
    ((0.858, 0.848), (0.75, 0.75), 1.0, POST),  # 0.2 points worse per epoch, inside the 0.3 floor: eligible
    ((0.845, 0.855), (0.75, 0.75), 1.0, POST),  # -1.5 / +0.5: mean -0.5 inside the seeds' spread 1.41: eligible
    ((0.861, 0.851), (0.76, 0.76), 1.0, POST),  # ahead at equal time
    ((0.861, 0.851), (0.72, 0.72), 100.0, TRAILS),
    ((0.861, 0.851), (0.741, 0.739), 100.0, POST),  # a tie in time, faster
    ((0.861, 0.851), (0.741, 0.739), 10.0, "pre-activation stays"),  # a tie in time, slower
])
def test_postact_decision_rule(tmp_path, capsys, post_epochs, post_timed, post_rate, outcome):
    epochs = _rows(tmp_path / "epochs", [("pre", 0, 0.86), ("pre", 1, 0.85),
                                         ("post", 0, post_epochs[0]), ("post", 1, post_epochs[1])])
    timed = _rows(tmp_path / "time", [("pre", 0, 0.74), ("pre", 1, 0.74),
                                      ("post", 0, post_timed[0]), ("post", 1, post_timed[1])])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [
        {"model": "microdensenet_cifar_tiny:channels_last=true", "train_img_s": 50.0},
        {"model": "microdensenet_cifar_tiny:preact=false:channels_last=true", "train_img_s": post_rate}]}))
    assert _script_module("postact-decide").main(epochs, timed, str(bench)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "outcome: " + outcome


def test_postact_decide_waits_for_two_seeds(tmp_path, capsys):
    epochs = _rows(tmp_path / "epochs", [("pre", 0, 0.86), ("pre", 1, 0.85), ("post", 0, 0.86)])
    assert _script_module("postact-decide").main(epochs, str(tmp_path / "none"), str(tmp_path / "none.json")) == 1
    assert "no decision yet" in capsys.readouterr().out


def test_group_width_decision_rule(tmp_path, capsys):
    # d=8 is best per epoch; d=4 is within d=4's own spread of it, d=2 within the best's spread, d=16 in neither; at
    # equal time d=4 and d=8 tie within 0.3 points, so the faster of the two wins
    epochs = _rows(tmp_path / "epochs", [("d=8", 0, 0.825), ("d=8", 1, 0.815), ("d=4", 0, 0.82), ("d=4", 1, 0.80),
                                         ("d=2", 0, 0.815), ("d=2", 1, 0.815), ("d=16", 0, 0.80), ("d=16", 1, 0.80)])
    timed = _rows(tmp_path / "time", [("d=8", 0, 0.77), ("d=8", 1, 0.77), ("d=4", 0, 0.772), ("d=4", 1, 0.772),
                                      ("d=2", 0, 0.76), ("d=2", 1, 0.76), ("d=16", 0, 0.80), ("d=16", 1, 0.80)])
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"results": [
        {"model": f"microdensenet_cifar_tiny:group_width={d}:channels_last=true", "train_img_s": rate}
        for d, rate in ((4, 90.0), (8, 120.0), (16, 200.0))]}))
    assert _script_module("group-width-decide").main(epochs, timed, str(bench)) == 0
    out = capsys.readouterr().out
    step2 = out.split("(2)")[1]
    assert "d=2 76.00" in step2  # eligible: 0.5 behind, inside the best's spread 0.71 though its own is 0
    assert "d=16" not in step2  # out at step (1), so its faster, more accurate timed runs do not count
    assert out.splitlines()[-1] == "winner: d=8"
