"""What the benchmark ran on, and the dense matmul rate that hardware efficiency is measured against."""
import os
import platform
import time
from typing import Any, Dict

import torch

from microdense.provenance import cpu_name


def sync(device: torch.device) -> None:
    """Wait for queued device work, so host clocks time what ran."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """Best achieved FLOP/s of an n^3 float32 matrix multiply (2 n^3 FLOPs) on `device`."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def machine_info(device: torch.device, probe: bool = True) -> Dict[str, Any]:
    """What ran: CPU, cores, threads, torch, the GPU on a CUDA device; `probe` adds the matmul rate (seconds)."""
    info: Dict[str, Any] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": str(device),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if probe:
        info["matmul_fp32_flops"] = matmul_flops(device)
    return info
