"""Weights people can use without this trainer: `model.safetensors` + timm's `config.json`, and the
one safe way back from any checkpoint this project writes.

The export folder is a timm local model: `timm.create_model("local-dir:RUN", pretrained=True)`
(after `import microdense`) rebuilds the trained network.
"""
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from safetensors import SafetensorError
from timm.models import save_for_hf

from microdense.errors import UserError
from microdense.io import default_mode
from microdense.models import create_model

WEIGHTS, CONFIG = "model.safetensors", "config.json"


def export_model(model: nn.Module, run_dir: os.PathLike, model_name: str, model_args: Dict[str, Any],
                 classes: List[str], mean: Tuple[float, ...], std: Tuple[float, ...],
                 input_size: Tuple[int, int, int], crop_pct: float = 1.0, metrics: Optional[Dict] = None) -> Path:
    """Write model.safetensors and config.json into `run_dir`, each by an atomic rename."""
    run_dir = Path(run_dir)
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".export-") as tmp:
        save_for_hf(
            model, tmp,
            model_config=dict(architecture=model_name, label_names=list(classes),
                              microdense=dict(metrics=metrics or {})),
            model_args=dict(model_args),
            safe_serialization=True,
            data_config=dict(input_size=tuple(input_size), mean=tuple(mean), std=tuple(std), crop_pct=crop_pct),
        )
        for name in (WEIGHTS, CONFIG):
            os.chmod(Path(tmp) / name, default_mode())  # safetensors writes 0600
            os.replace(Path(tmp) / name, run_dir / name)
    return run_dir / WEIGHTS


@dataclass
class LoadedModel:
    model: nn.Module
    name: str
    classes: List[str]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    input_size: Tuple[int, int, int]
    crop_pct: float = 1.0  # eval resize = input side / crop_pct, then a centre crop

    def data_config(self) -> Dict[str, Any]:
        """timm's data config (`resolve_data_config` keys) for this model's eval transform."""
        return dict(input_size=tuple(self.input_size), interpolation="bilinear", mean=tuple(self.mean),
                    std=tuple(self.std), crop_pct=self.crop_pct, crop_mode="center")

    def metadata(self) -> Dict[str, Any]:
        """What a deployed copy needs beside its weights: the architecture, class names and input transform."""
        return dict(architecture=self.name, label_names=list(self.classes), **self.data_config())


def _default_crop_pct(input_size: Tuple[int, ...]) -> float:
    return 1.0 if max(input_size[1:]) <= 64 else 0.875  # what training's eval used: small images uncropped


def _corrupt(path: Path, e: Exception) -> UserError:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return UserError(f"checkpoint {path} is truncated or corrupt ({reason}); point --checkpoint at another file "
                     "or re-export it")


def _load_export(folder: Path) -> LoadedModel:
    from safetensors.torch import load_file
    try:
        cfg = json.loads((folder / CONFIG).read_text())
        state = load_file(str(folder / WEIGHTS))
    except FileNotFoundError as e:
        raise UserError(f"{folder} has no {Path(e.filename).name}; expected {WEIGHTS} beside {CONFIG}") from None
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise _corrupt(folder / WEIGHTS, e) from None
    pre = cfg.get("pretrained_cfg", {})
    model = create_model(cfg["architecture"], **cfg.get("model_args", {}))
    model.load_state_dict(state)
    classes = cfg.get("label_names") or pre.get("label_names") or []
    return LoadedModel(model, cfg["architecture"], classes, tuple(pre["mean"]), tuple(pre["std"]),
                       tuple(pre["input_size"]), pre.get("crop_pct", _default_crop_pct(pre["input_size"])))


def _load_lightning(path: Path) -> LoadedModel:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle stream, not a checkpoint at all
        raise _corrupt(path, e) from None
    info = ckpt.get("microdense") if isinstance(ckpt, dict) else None
    if not info:
        raise UserError(f"{path} is not a microdense training checkpoint (no run information inside)")
    model = create_model(info["model"], **info["model_args"])
    prefix = "ema.module." if info.get("ema") else "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return LoadedModel(model, info["model"], info["classes"], tuple(info["mean"]), tuple(info["std"]),
                       tuple(info["input_size"]), info.get("crop_pct", _default_crop_pct(info["input_size"])))


def load_model(path: os.PathLike) -> LoadedModel:
    """Rebuild a trained model from a run folder, a model.safetensors export or a Lightning .ckpt."""
    path = Path(path)
    if path.is_dir():
        return _load_export(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; pass a run folder, {WEIGHTS} or a .ckpt file")
    if path.suffix == ".safetensors":
        return _load_export(path.parent)
    return _load_lightning(path)
