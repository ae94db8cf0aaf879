"""The prepared scripts: each is valid bash, and `scripts/gpu-check.sh`, without a GPU, stops at once and says why."""
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
