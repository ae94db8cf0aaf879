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


@pytest.mark.parametrize("d, expected", [
    ([1.0, 0.9], "SUPPORTED"),
    ([0.2, 0.25], "NOT SETTLED at this size"),  # same sign, inside the 0.3-point floor
    ([3.0, 0.5], "NOT SETTLED at this size"),  # same sign, mean 1.75 inside the seeds' spread 1.77
    ([2.0, -0.1], "NOT SETTLED at this size"),  # the seeds disagree
    ([-1.0, -1.2], "CONTRADICTED"),
])
def test_ablation_decision_rule(d, expected):
    assert _script_module("ablation-decide").verdict(d) == expected


def test_ablation_decide_pairs_each_variant_with_the_default_at_the_same_seed(tmp_path, capsys):
    rows = [("default", 0, 0.87), ("default", 1, 0.86), ("residual", 0, 0.84), ("residual", 1, 0.85),
            ("constant", 0, 0.86), ("fixed", 1, None)]  # constant has one seed in; fixed's only run diverged
    (tmp_path / "results.jsonl").write_text("".join(
        json.dumps({"entry": e, "seed": s, "val_top1": v}) + "\n" for e, s, v in rows))
    assert _script_module("ablation-decide").main(str(tmp_path)) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("residual (micro-dense aggregation): default - residual by seed +3.00 / +1.00; mean +2.00")
    assert out[0].endswith("-> SUPPORTED")
    assert out[1] == "constant (pyramidal widths): 1 seed(s) paired with the default; no verdict yet"
    assert out[2] == "fixed (adaptive cardinality): 0 seed(s) paired with the default; no verdict yet"
