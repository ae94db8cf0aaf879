"""The fused CPU kernel of a pre-activation consumer: scale, shift and ReLU in one pass each way.

PyTorch's eager CPU operators make a consumer's scale, shift and ReLU over a concatenation several memory passes each
way (the concatenation, the affine, the ReLU, their backwards and the split of the gradient, each writing a tensor of
its own); `csrc/scale_shift_relu.cpp` does it in one pass forward and one backward, reading the features where they
lie. It is an optional accelerator: compiled on first use with the C++ compiler PyTorch's extensions use
(`torch.utils.cpp_extension`, which needs ninja: `pip install microdense[fast]`), about a minute on 2 cores, said in one
line, then cached in `TORCH_EXTENSIONS_DIR`; `scripts/setup.sh` builds it once. Where it cannot be built (no compiler,
no ninja), or for tensors it does not take (not on the CPU, not float32/float64, under `torch.compile`),
`concat_norm` runs the same function in eager PyTorch. `MICRODENSE_FUSED_KERNELS=0` turns the kernel off.
"""
import functools
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, List, Optional

import torch

__all__ = ["build_directory", "fused_kernels", "memory_format_of", "scale_shift_relu", "takes"]

SOURCE = Path(__file__).parent / "csrc" / "scale_shift_relu.cpp"
ENV_SWITCH = "MICRODENSE_FUSED_KERNELS"
NAME = "microdense_scale_shift_relu"
FAST_EXTRA = "pip install microdense[fast]"


def build_directory() -> Path:
    """Where the kernel is built and cached: under `TORCH_EXTENSIONS_DIR` (else torch's default root), keyed by the
    Python and torch versions, so that a library built against another torch is never taken as this one's."""
    from torch.utils.cpp_extension import get_default_build_root
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    key = f"py{sys.version_info.major}{sys.version_info.minor}_torch{torch.__version__}".replace("+", "_")
    return Path(root) / f"{NAME}_{key}"


def _pip_ninja_on_path() -> None:
    """Put the ninja `pip install microdense[fast]` installed on PATH, where torch's builder looks for it alone: it lies
    beside the interpreter, off PATH when `.venv/bin/microdense` runs in a shell that has not activated the venv."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    if shutil.which("ninja", path=ninja.BIN_DIR):
        os.environ["PATH"] = os.pathsep.join(filter(None, (ninja.BIN_DIR, os.environ.get("PATH"))))


def _unbuildable(built: bool) -> Optional[str]:
    """Why the kernel cannot be built here, with the fix; None when it can be (or is already built)."""
    from torch.utils.cpp_extension import get_cxx_compiler, is_ninja_available
    _pip_ninja_on_path()
    # NOTE: torch's loader runs ninja even for a cached build (to see it is up to date); the compiler only to build
    if not is_ninja_available():
        return f"ninja is not installed; {FAST_EXTRA}"
    if not built and shutil.which(get_cxx_compiler()) is None:
        return f"no C++ compiler {get_cxx_compiler()!r} found; install one (e.g. g++) or set CXX"
    return None


def _warn_eager(why: str) -> None:
    warnings.warn(f"microdense: the fused CPU kernel is not used ({why}); training takes the eager path, which is "
                  "slower", RuntimeWarning, stacklevel=4)


@functools.lru_cache(maxsize=None)
def fused_kernels() -> Optional[Any]:
    """The compiled kernel module, built on first call; None when switched off or when it cannot be built (a
    warning then says why and the fix, once, and the eager path takes over)."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    # NOTE: importing torch's extension builder logs that a CPU-only machine has no CUDA runtime; that is expected
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        return _load()
    finally:
        logger.setLevel(level)


def _load() -> Optional[Any]:
    """`fused_kernels` under the silenced extension logger: its checks, its one line, the build."""
    from torch.utils.cpp_extension import load
    folder = build_directory()
    library = folder / f"{NAME}.so"
    # NOTE: a library older than the source is rebuilt by ninja (an edit, an upgraded package), so that is said too
    built = library.exists() and library.stat().st_mtime >= SOURCE.stat().st_mtime
    why = _unbuildable(built)
    if why:
        _warn_eager(why)
        return None
    if not built:  # NOTE: a warning, so the CLI shows it under --quiet and a bare Python caller sees it on stderr
        logging.getLogger(__name__).warning("microdense: compiling the fused CPU kernel, once (about a minute on 2 "
                                            "cores; cached in %s)", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # -ffp-contract=off: the backward recomputes the forward's x * scale + shift exactly, so its ReLU mask agrees
        return load(NAME, [str(SOURCE)], extra_cflags=["-O3", "-ffp-contract=off"], build_directory=str(folder))
    except Exception as e:  # a failing compiler, a read-only cache: the eager path computes the same
        _warn_eager(f"it could not be built: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return None


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor laid out so (and not also plainly contiguous), else the contiguous format."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


class _ScaleShiftReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scale: torch.Tensor, shift: torch.Tensor, *features: torch.Tensor) -> torch.Tensor:
        fmt = memory_format_of(features[0])
        features = tuple(f.contiguous(memory_format=fmt) for f in features)
        scale, shift = scale.contiguous(), shift.contiguous()
        ctx.save_for_backward(scale, shift, *features)
        ctx.fmt = fmt
        return fused_kernels().forward(list(features), scale, shift)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        scale, shift, *features = ctx.saved_tensors
        return tuple(fused_kernels().backward(grad.contiguous(memory_format=ctx.fmt), features, scale, shift))


def takes(features: List[torch.Tensor], scale: torch.Tensor) -> bool:
    """Whether the fused kernel runs these tensors (else the eager path does)."""
    return (scale.device.type == "cpu" and scale.dtype in (torch.float32, torch.float64)
            and all(f.dim() == 4 and f.dtype == scale.dtype and f.device.type == "cpu" for f in features)
            and not torch.compiler.is_compiling() and fused_kernels() is not None)


def scale_shift_relu(features: List[torch.Tensor], scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """relu(cat(features) * scale + shift) in one pass, its backward in one more (see `takes`)."""
    return _ScaleShiftReLU.apply(scale, shift, *features)
