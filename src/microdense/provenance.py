"""Where a result came from: the code, the libraries, the machine and its kernels, so every figure is traceable.

Every run folder (`config.yaml`, `config.json`), study row and benchmark JSON carries `provenance()`: the git commit
of the package's source tree and whether it had uncommitted changes, the versions of the libraries that shape a
result, the CPU, the instruction set oneDNN runs its kernels with, and the thread count. The data's own fingerprint
(`microdense.data.sources.DataSource.fingerprint`) is added beside it by whoever read the data.
"""
import functools
import os
import platform
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

LIBRARIES = ("torch", "torchvision", "timm", "lightning")
# the paths whose uncommitted changes can change a result: the package and what installs it
SOURCE_PATHS = ("src", "pyproject.toml")


def source_root() -> Optional[Path]:
    """The git checkout the running package was loaded from (editable installs, PYTHONPATH=src), or None."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / ".git").exists() else None


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_state() -> Dict[str, Any]:
    """{commit, dirty, version}: the commit the package's checkout is at and whether its sources differ from it
    (changed, staged or new files under src/ or pyproject.toml); both None outside a git checkout."""
    try:
        version = metadata.version("microdense")
    except metadata.PackageNotFoundError:
        version = None
    root = source_root()
    commit = _git(root, "rev-parse", "HEAD") if root else None
    status = _git(root, "status", "--porcelain", "--", *SOURCE_PATHS) if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status), "version": version}


def file_state(path: Path) -> Dict[str, Any]:
    """{path, commit, dirty}: the commit of the git repository holding `path` and whether the file differs from it;
    commit and dirty are None outside a repository. A study's rows record it for the study file, so its rule can be
    read as it stood when they were made, wherever the file lives."""
    folder = Path(path).resolve().parent
    commit = _git(folder, "rev-parse", "HEAD")
    status = _git(folder, "status", "--porcelain", "--", Path(path).name) if commit else None
    return {"path": str(path), "commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> Dict[str, Optional[str]]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def onednn_verbose(fn: Callable[[], Any]) -> List[str]:
    """The lines oneDNN's verbose mode prints while `fn()` runs: one per primitive executed (`...,exec,cpu,
    convolution,<implementation>,<propagation>,...`), after a header with the ISA the first time in a process."""
    import torch
    # NOTE: oneDNN prints to the process's stdout (file descriptor 1), below Python: captured there.
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile(mode="w+") as capture:
        os.dup2(capture.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                fn()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        return [line for line in capture.read().splitlines() if line.startswith("onednn_verbose")]


_FRESH_PROBE = "MICRODENSE_ISA_PROBE"  # set in the one fresh interpreter onednn_isa may ask


@functools.lru_cache(maxsize=1)
def onednn_isa() -> Optional[str]:
    """The instruction set oneDNN runs its CPU kernels with here ('Intel AVX2', 'Intel AVX-512 with ... bfloat16
    support', ...; `ONEDNN_MAX_CPU_ISA` lowers it), as its verbose header names it; None where it cannot tell."""
    import torch
    if not torch.backends.mkldnn.is_available():
        return None
    x = torch.zeros(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    w = torch.zeros(8, 2, 3, 3)
    # NOTE: a grouped channels_last conv always reaches oneDNN, whose first primitive prints the header.
    lines = onednn_verbose(lambda: torch.nn.functional.conv2d(x, w, padding=1, groups=4))
    isa = next((line.split("isa:", 1)[1].strip() for line in lines if ",isa:" in line), None)
    if isa is None and not os.environ.get(_FRESH_PROBE):
        # oneDNN prints its header once per process, and verbose mode ran here before: ask a fresh interpreter
        probe = "from microdense.provenance import onednn_isa; print(onednn_isa() or '')"
        try:
            out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                                 env={**os.environ, _FRESH_PROBE: "1"}).stdout.strip().splitlines()
        except subprocess.TimeoutExpired:
            out = []
        isa = (out[-1] if out else "") or None
    return isa


def provenance() -> Dict[str, Any]:
    """The code, libraries and machine a result is being made with (see the module's docstring)."""
    import torch
    machine = {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "isa": onednn_isa(),
               "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "python": platform.python_version()}
    if torch.cuda.is_available():
        machine["gpu"] = torch.cuda.get_device_name()
    return {"code": code_state(), "versions": library_versions(), "machine": machine}
