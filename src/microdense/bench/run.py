"""`microdense bench`: every model measured on one machine in one invocation, side by side.

Each model runs in a subprocess of its own (a worker module: `microdense.bench.worker`, or one that adds a leg of its
own) so peak-memory readings never mix; the machine's dense fp32 matmul rate is probed first, in this process, and
every model's hardware efficiency is its achieved training FLOP/s over that rate.
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch

from microdense.bench.machine import machine_info
from microdense.errors import ConfigError
from microdense.io import atomic_write_text
from microdense.plots import pyplot, save_png
from microdense.provenance import provenance

COLUMNS = ("model", "params", "macs", "train_img_s", "infer_img_s", "latency_ms", "peak_mem_mb", "efficiency")
WORKER = "microdense.bench.worker"


def bench_one(spec: str, batch_size: int, steps: int, warmup: int, device: str, latency_runs: int,
              worker: Optional[str] = None, kernels: bool = False, profile: bool = False) -> Dict[str, Any]:
    """One spec measured in a fresh process of `worker` (None: the bench's own, `WORKER`)."""
    opts = dict(spec=spec, batch_size=batch_size, steps=steps, warmup=warmup, device=device,
                latency_runs=latency_runs, kernels=kernels, profile=profile)
    proc = subprocess.run([sys.executable, "-m", worker or WORKER, json.dumps(opts)],
                          capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):  # the worker died before it could answer (killed, out of memory)
        result = {"error": f"the worker process ended with status {proc.returncode} and no answer"}
    if proc.returncode != 0 or "error" in result:
        # NOTE: every spec was checked before the run, so this is a crash (a bug, or out of memory): its traceback shows
        raise RuntimeError(f"benchmark of {spec} failed: {result.get('error', 'no reason given')}\n"
                           f"the worker's stderr ends:\n{proc.stderr[-4000:]}")
    return result


# the figures a round measures that its median over rounds reports
ROUND_FIGURES = ("train_img_s", "infer_img_s", "latency_ms", "peak_mem_mb", "train_flops", "pipeline_img_s",
                 "pipeline_overhead")


def _median_of_rounds(rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
    """One model's result over its rounds: the first round's record, each figure the median over the rounds (the
    rounds' training img/s kept beside it); a shared machine's drift then moves every model's figure alike."""
    result = dict(rounds[0])
    for key in ROUND_FIGURES:
        values = [r[key] for r in rounds if r.get(key) is not None]
        if values:
            result[key] = statistics.median(values)
    result["rounds"] = len(rounds)
    if len(rounds) > 1 and result.get("train_img_s") is not None:
        result["train_img_s_by_round"] = [r["train_img_s"] for r in rounds]
    return result


def run_bench(specs: List[str], batch_size: int = 64, steps: int = 10, warmup: int = 3, device: str = "cpu",
              latency_runs: int = 30, worker: Optional[str] = None,
              progress: Optional[Callable[[int, str], None]] = None, kernels: bool = False,
              profile: bool = False, rounds: int = 1) -> Dict[str, Any]:
    """Measure every spec (see `microdense.bench.worker`); each is checked before any measurement starts.

    With `rounds` > 1 every spec is measured that many times, round-robin (a fresh process each time), and each
    figure is the median of its rounds; the kernel list and profile come from the first round. `worker`: the module
    each measurement runs in (`python -m`; None: `WORKER`), for one that adds a leg of its own to the bench worker's
    (the command line's --pipeline names the training pipeline's).

    Raises:
        ConfigError, ArgumentError: a spec that cannot be measured, named.
    """
    from microdense.bench.worker import check_spec

    for spec in specs:
        check_spec(spec)
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda asked for, but torch sees no CUDA device here; use the cpu")
    if rounds < 1:
        raise ConfigError(f"bench rounds: must be >= 1, got {rounds}")
    machine = machine_info(torch.device(device))
    by_spec: Dict[str, List[Dict[str, Any]]] = {spec: [] for spec in specs}
    for k in range(rounds):
        for i, spec in enumerate(specs):
            if progress:
                progress(k * len(specs) + i, spec)
            first = k == 0
            by_spec[spec].append(bench_one(spec, batch_size, steps, warmup, device, latency_runs, worker,
                                           kernels and first, profile and first))
    results = []
    for spec in specs:
        r = _median_of_rounds(by_spec[spec])
        r["efficiency"] = None if r["train_flops"] is None else r["train_flops"] / machine["matmul_fp32_flops"]
        results.append(r)
    return {"machine": machine, "provenance": provenance(), "command": " ".join(["microdense", *sys.argv[1:]]),
            "results": results}


def write_json(path: Path, report: Dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def plot_bench(path: Path, report: Dict[str, Any]) -> None:
    """Training/inference throughput and peak training memory against parameters (log x)."""
    plt = pyplot()

    rows = report["results"]
    params = [r["params"] / 1e6 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("train_img_s", "training images/s"), ("infer_img_s", "inference images/s"),
              ("peak_mem_mb", "peak training memory (MB)"))
    for ax, (key, title) in zip(axes, panels):
        for r, p in zip(rows, params):
            if r[key] is None:  # an inference-only backend has no training figures
                continue
            ours = r["model"].startswith("microdense")
            ax.scatter(p, r[key], marker="o" if ours else "s", color="tab:red" if ours else "tab:blue")
            ax.annotate(r["model"].replace("microdensenet_", "mdn_").replace("_cifar", ""), (p, r[key]),
                        fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")  # models span two orders of magnitude in speed and memory
        ax.set_xlabel("parameters (M)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    m = report["machine"]
    fig.suptitle(f"batch {rows[0]['batch_size']} on {m.get('gpu', m['cpu'])} ({m['device']}), torch {m['torch']}",
                 fontsize=9)
    fig.tight_layout()
    save_png(fig, path)
