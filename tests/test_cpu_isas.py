"""Every registered model trains on every x86 CPU a user may have: the smaller CPUs emulated on this one.

oneDNN picks its kernels by the CPU's instruction sets and honours `ONEDNN_MAX_CPU_ISA` as a ceiling, so a bigger CPU
runs the kernels a smaller one would. Each ceiling this CPU can set gets a subprocess in which every registered model
takes one training step in channels_last at one thread (how studies run), the conditions of oneDNN's AVX2 fault.
"""
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import cpu_flags

# oneDNN ceiling -> the /proc/cpuinfo flags a CPU needs to run it; None: no ceiling (the CPU's own best kernels)
CEILINGS = {
    "AVX2": {"avx2", "fma"},
    "AVX512_CORE": {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
    None: set(),
}

STEP_EVERY_MODEL = textwrap.dedent("""
    import math
    import torch
    import torch.nn.functional as F
    import microdense
    from microdense.models import create_model, list_models, resolve_input_size

    torch.set_num_threads(1)
    torch.manual_seed(0)
    for name in list_models():
        model = create_model(name, num_classes=10).to(memory_format=torch.channels_last).train()
        c, h, w = resolve_input_size(model)
        x = torch.randn(2, c, h, w).contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(x), torch.tensor([0, 1]))
        loss.backward()
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert math.isfinite(loss.item()), name
        print("stepped", name, flush=True)
""")


@pytest.mark.slow
@pytest.mark.parametrize("ceiling", CEILINGS, ids=[c or "native" for c in CEILINGS])
def test_every_model_takes_a_training_step_under_each_isa(ceiling):
    missing = CEILINGS[ceiling] - cpu_flags()
    if missing:
        pytest.skip(f"this CPU lacks {sorted(missing)}, so it cannot run oneDNN's {ceiling} kernels")
    from microdense_cli import MODEL_NAMES
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    if ceiling:
        env["ONEDNN_MAX_CPU_ISA"] = ceiling
    proc = subprocess.run([sys.executable, "-c", STEP_EVERY_MODEL], env=env, capture_output=True, text=True,
                          timeout=900)
    stepped = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("stepped ")]
    assert proc.returncode == 0, f"ended with status {proc.returncode} after {stepped[-1:]}:\n{proc.stderr[-800:]}"
    assert sorted(stepped) == sorted(MODEL_NAMES)
