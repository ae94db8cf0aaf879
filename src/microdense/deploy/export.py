"""ONNX and TorchScript files of a trained model, each checked against the source model before it is kept.

The exported graph is the eval-mode simplification (`fold_batchnorm`); the check runs it (ONNX Runtime, or the
reloaded TorchScript module) on a batch of inputs and compares its logits with the unsimplified PyTorch model.
Only a file that passes is renamed into place, so a failed export leaves nothing half-written behind.
"""
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn as nn

from microdense.deploy.fold import FoldReport, fold_batchnorm
from microdense.errors import ConfigError
from microdense.io import atomic_path
from microdense.saved.trained_model import LoadedModel

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
METADATA_KEY = "microdense"  # ONNX metadata_props key / TorchScript extra file (as METADATA_KEY + ".json")
TOLERANCE = 1e-4  # max |logit difference| an export may show against the source model
DEFAULT_OPSET = 18


@dataclass
class ExportResult:
    path: Path
    format: str
    fold: FoldReport
    max_abs_diff: float
    images: int


def check_inputs(loaded: LoadedModel, n: int = 8, seed: int = 0) -> torch.Tensor:
    """`n` images of uniform random pixels, normalised as the model's eval transform normalises real ones, so the
    check sees inputs in the same range (the export needs no dataset)."""
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, *loaded.info.input_size), generator=g).float() / 255
    mean = torch.tensor(loaded.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(loaded.info.std).view(1, -1, 1, 1)
    return (pixels - mean) / std


def onnx_session(path: os.PathLike) -> Any:
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: np.ndarray, fixed_batch: Optional[int]) -> np.ndarray:
    """Logits for `x`; a file exported without a dynamic batch axis is fed `fixed_batch` images at a time."""
    name = session.get_inputs()[0].name
    if fixed_batch is None:
        return session.run(None, {name: x})[0]
    return np.concatenate([session.run(None, {name: x[i:i + fixed_batch]})[0] for i in range(0, len(x), fixed_batch)])


def onnx_fixed_batch(session: Any) -> Optional[int]:
    dim = session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) else None


def export_onnx(model: nn.Module, example: torch.Tensor, path: str, opset: int, dynamic_batch: bool,
                metadata: Dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Write `model` as ONNX with `metadata` in its properties; returns an ONNX Runtime session on it as a callable."""
    import onnx
    with warnings.catch_warnings():
        # NOTE: the TorchScript-based exporter: 5-20x faster to export these CNNs than the dynamo one, same graph.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        # the exporter's own notice names our module as its source, so it is matched by its text
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, (example,), path, input_names=["input"], output_names=["logits"],
                          opset_version=opset, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None)
    proto = onnx.load(path)
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(metadata)})
    onnx.save(proto, path)
    session = onnx_session(path)
    fixed = onnx_fixed_batch(session)
    return lambda x: torch.from_numpy(run_onnx(session, x.numpy(), fixed))


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: str,
                        metadata: Dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        # NOTE: PyTorch deprecates TorchScript (the README says so, and points to ONNX); the format is still served.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, path, _extra_files={METADATA_KEY + ".json": json.dumps(metadata)})
        return torch.jit.load(path)


def export_model_file(loaded: LoadedModel, out: os.PathLike, fmt: str, opset: int = DEFAULT_OPSET,
                      dynamic_batch: bool = False, check_images: int = 8, tolerance: float = TOLERANCE) -> ExportResult:
    """Write `loaded` to `out` as `fmt`, checked on `check_images` inputs against the source model.

    Without `dynamic_batch` the file takes one image per call (the serving shape for batch-1 latency).
    `tolerance`: the largest |logit difference| accepted.

    Raises:
        ConfigError: an unknown format or an unwritable destination. RuntimeError (a fault of the exporter, with its
            traceback): an export that fails its check.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out)
    if not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise ConfigError(f"cannot write {out}: {out.parent} is not a writable folder")
    source = loaded.model.eval()
    folded, report = fold_batchnorm(source)
    x = check_inputs(loaded, check_images)
    example = x if dynamic_batch else x[:1]
    with torch.no_grad():
        expected = source(x)
    with atomic_path(out) as tmp, torch.no_grad():
        if fmt == "onnx":
            runner = export_onnx(folded, example, str(tmp), opset, dynamic_batch, loaded.info.metadata())
        else:
            runner = _export_torchscript(folded, example, str(tmp), loaded.info.metadata())
        got = runner(x)
        diff = float((got - expected).abs().max())
        same_top1 = bool((got.argmax(1) == expected.argmax(1)).all())
        if not diff <= tolerance or not same_top1:
            # NOTE: an exporter's fault, not the user's: it keeps its traceback
            raise RuntimeError(f"the {fmt} export disagrees with the source model: max |logit difference| "
                               f"{diff:.2e} (allowed {tolerance:.0e}), top-1 {'equal' if same_top1 else 'different'}; "
                               "nothing was written")
    return ExportResult(out, fmt, report, diff, len(x))
