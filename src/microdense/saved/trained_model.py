"""A trained model as a run saves it for use without this trainer: `model.safetensors` + timm's `config.json`, and
`RunInfo`, the record beside every set of weights.

The export folder is a timm local model: `timm.create_model("local-dir:RUN", pretrained=True)` (after
`import microdense`) rebuilds the trained network. Checkpoints and exports carry the same `RunInfo`, written and read
in one shape; `microdense.saved.weights_source` reads any of them back.
"""
import copy
import dataclasses
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from timm.models import save_for_hf

from microdense.io import publish

WEIGHTS, CONFIG = "model.safetensors", "config.json"
RUN_INFO_KEY = "microdense"  # the key of RunInfo in a checkpoint and in config.json


@dataclass(frozen=True)
class RunInfo:
    """What rebuilding and feeding a trained model needs beside its weights."""

    model: str  # registered architecture
    model_args: Dict[str, Any]  # timm.create_model kwargs it was built with
    classes: List[str]  # class names, by class index
    mean: Tuple[float, ...]  # input normalisation measured on (or given for) the training data
    std: Tuple[float, ...]
    input_size: Tuple[int, int, int]
    crop_pct: float = 1.0  # eval resize = input side / crop_pct, then a centre crop (small images: 1.0)
    ema: bool = False  # a checkpoint's weights to serve are its EMA copy
    metrics: Dict[str, Optional[float]] = field(default_factory=dict)  # final validation figures
    provenance: Dict[str, Any] = field(default_factory=dict)  # code, libraries, machine and data that made it

    def to_dict(self) -> Dict[str, Any]:
        """Plain lists and numbers: safe for `torch.load(weights_only=True)` and JSON alike."""
        d = dataclasses.asdict(self)
        for key in ("mean", "std", "input_size"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunInfo":
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"]), "input_size": tuple(d["input_size"])})

    def data_config(self) -> Dict[str, Any]:
        """timm's data config (`resolve_data_config` keys) for this model's eval transform."""
        return dict(input_size=tuple(self.input_size), interpolation="bilinear", mean=tuple(self.mean),
                    std=tuple(self.std), crop_pct=self.crop_pct, crop_mode="center")

    @property
    def data_tag(self) -> Optional[str]:
        """timm's `tag` for these weights: a release's own tag, or the name of the data the run trained on."""
        release = self.provenance.get("release")
        return release.split(".", 1)[1] if release else (self.provenance.get("data") or {}).get("name")

    def metadata(self) -> Dict[str, Any]:
        """What a deployed copy needs beside its weights: the architecture, class names and input transform."""
        return dict(architecture=self.model, label_names=list(self.classes), **self.data_config())


def save_for_timm(model: nn.Module, run_dir: os.PathLike, info: RunInfo) -> Path:
    """Write model.safetensors and config.json (timm's fields, and `info`) into `run_dir` through timm's own
    `save_for_hf`, each by an atomic rename: the folder timm loads as `local-dir:RUN`."""
    run_dir = Path(run_dir)
    if any(not t.is_contiguous() for t in model.state_dict().values()):
        # NOTE: safetensors refuses the strided weights of a channels_last model; the file holds a contiguous copy.
        model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    # NOTE: the model's pretrained_cfg is its default release's (CIFAR-10's tag and labels); the export's is the run's
    own = dict(tag=info.data_tag, label_names=list(info.classes), num_classes=len(info.classes))
    with tempfile.TemporaryDirectory(dir=run_dir, prefix=".export-") as tmp:
        save_for_hf(
            model, tmp,
            model_config={"architecture": info.model, "label_names": list(info.classes), "pretrained_cfg": own,
                          RUN_INFO_KEY: dataclasses.replace(info, ema=False).to_dict()},
            model_args=dict(info.model_args),
            safe_serialization=True,
            data_config=dict(input_size=tuple(info.input_size), mean=tuple(info.mean), std=tuple(info.std),
                             crop_pct=info.crop_pct),
        )
        for name in (WEIGHTS, CONFIG):
            publish(Path(tmp) / name, run_dir / name)
    return run_dir / WEIGHTS


def nonfinite(state: Mapping[str, torch.Tensor]) -> List[str]:
    """Names of the floating-point tensors in `state` that hold NaN or inf (what a diverged run leaves)."""
    return [k for k, v in state.items() if torch.is_floating_point(v) and not bool(torch.isfinite(v).all())]


@dataclass
class LoadedModel:
    """A trained network rebuilt, with the record of what it is."""

    model: nn.Module
    info: RunInfo
