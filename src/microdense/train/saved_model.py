"""What a run saves for use without this trainer, and the one safe way back from anything it saves:
`model.safetensors` + timm's `config.json`, and `RunInfo`, the record beside every set of weights.

The export folder is a timm local model: `timm.create_model("local-dir:RUN", pretrained=True)`
(after `import microdense`) rebuilds the trained network. Checkpoints and exports carry the same `RunInfo`,
written and read in one shape. `load_model` also takes a released name (`microdensenet_cifar_tiny.cifar10`, or a
bare model name that has a release: `microdense.models._pretrained`), and `init_from` starts a new model from any of
these.
"""
import copy
import dataclasses
import json
import os
import pickle
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
from safetensors import SafetensorError
from timm.models import save_for_hf

from microdense.errors import WeightsError
from microdense.io import publish
from microdense.models import create_model
from microdense.models._pretrained import parse_release_name, pretrained_overlay, read_release, require_release
from microdense.train.run_folder import CONFIG_FILE, last_checkpoint

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
    model: nn.Module
    info: RunInfo


# the fix for a checkpoint that cannot be read
REREAD = "use another file or export it again"


def _missing_weights(folder: Path) -> FileNotFoundError:
    """A folder without its weights: a run that has not finished, or whose weights were not kept (a committed study's
    run folders hold their configuration and curves alone)."""
    if last_checkpoint(folder).is_file():
        fix = f"load its checkpoint {last_checkpoint(folder)}, or resume the run to finish it"
    elif (folder / CONFIG_FILE).is_file():
        fix = f"train it again (microdense train --config {folder / CONFIG_FILE} --out NEW_FOLDER) and use that"
    else:
        fix = "give a run folder microdense train finished, a model.safetensors, a .ckpt or a released name"
    return FileNotFoundError(f"{folder} holds no weights (no {WEIGHTS}); {fix}")


def _load_export(folder: Path) -> LoadedModel:
    from safetensors.torch import load_file
    if not (folder / WEIGHTS).is_file():
        raise _missing_weights(folder)
    try:
        cfg = json.loads((folder / CONFIG).read_text())
        state = load_file(str(folder / WEIGHTS))
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} has no {CONFIG}; expected {CONFIG} beside {WEIGHTS}") from None
    except (json.JSONDecodeError, SafetensorError, OSError) as e:
        raise WeightsError.corrupt(f"checkpoint {folder / WEIGHTS} is", e, REREAD) from None
    if RUN_INFO_KEY not in cfg:
        raise WeightsError(f"{folder / CONFIG} is not a microdense export (no run information inside)")
    info = RunInfo.from_dict(cfg[RUN_INFO_KEY])
    model = create_model(info.model, **info.model_args)
    model.load_state_dict(state)
    return LoadedModel(model, info)


def _refused_for_safety(path: Path, e: pickle.UnpicklingError) -> Optional[WeightsError]:
    """The error for a file `weights_only` refused because it holds objects whose unpickling could run code."""
    if not str(e).startswith("Weights only load failed"):
        return None
    named = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
    what = f" (it names {named.group(1)})" if named else ""
    return WeightsError(f"checkpoint {path} was refused for safety, not loaded: it holds Python objects whose loading "
                      f"could run code{what}; microdense loads only tensors and plain data. Use a checkpoint or "
                      "model.safetensors that microdense wrote")


def _load_lightning(path: Path) -> LoadedModel:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise (_refused_for_safety(path, e) or WeightsError.corrupt(f"checkpoint {path} is", e, REREAD)) from None
    except Exception as e:  # truncated zip, bad pickle stream, not a checkpoint at all
        raise WeightsError.corrupt(f"checkpoint {path} is", e, REREAD) from None
    raw = ckpt.get(RUN_INFO_KEY) if isinstance(ckpt, dict) else None
    if not raw:
        raise WeightsError(f"{path} is not a microdense training checkpoint (no run information inside)")
    info = RunInfo.from_dict(raw)
    model = create_model(info.model, **info.model_args)
    prefix = "ema.module." if info.ema else "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    model.load_state_dict(state)
    return LoadedModel(model, info)


def release_info(model: str, tag: Optional[str] = None) -> Tuple[str, RunInfo]:
    """(tag, the RunInfo its header holds) of the release of `model` under `tag` (None: the model's default).

    Raises:
        ConfigError: no such release. WeightsError: its file is truncated or corrupt.
    """
    tag, path = require_release(model, tag)
    meta = read_release(path)
    record = meta["record"]
    return tag, RunInfo(
        model=model, model_args=dict(num_classes=meta["num_classes"]), classes=meta["classes"], mean=meta["mean"],
        std=meta["std"], input_size=meta["input_size"], crop_pct=meta["crop_pct"],
        metrics={k: record.get(k) for k in ("val_top1", "val_top5")},
        provenance=dict(release=f"{model}.{tag}", code=dict(commit=record.get("commit")),
                        data={**(record.get("data") or {}), "seed": record.get("seed")}))


def _load_release(model: str, tag: Optional[str]) -> LoadedModel:
    tag, info = release_info(model, tag)
    # NOTE: the overlay names the file, so timm loads exactly this release (any tag, registered or not).
    overlay = pretrained_overlay(model, True, tag)
    return LoadedModel(create_model(model, pretrained=True, pretrained_cfg_overlay=overlay), info)


def load_model(path: os.PathLike) -> LoadedModel:
    """Rebuild a trained model from a run folder, a model.safetensors export, a Lightning .ckpt, or a released name
    (`model.tag`, or a registered model name that has a release).

    Raises:
        WeightsError: the file is truncated, corrupt, unsafe or not microdense's, or its weights hold NaN or inf.
        FileNotFoundError: no such file, folder or released name.
    """
    path = Path(path)
    if path.is_dir():
        loaded = _load_export(path)
    elif not path.exists():
        named = parse_release_name(str(path))
        if named is None:
            raise FileNotFoundError(f"checkpoint {path} does not exist; expected a run folder, {WEIGHTS}, a .ckpt file "
                                    "or a released name such as microdensenet_cifar_tiny.cifar10")
        loaded = _load_release(*named)
    elif path.suffix == ".safetensors":
        loaded = _load_export(path.parent)
    else:
        loaded = _load_lightning(path)
    bad = nonfinite(loaded.model.state_dict())
    if bad:
        raise WeightsError(f"checkpoint {path} holds NaN or inf ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''})"
                           ": its run diverged; train again with a lower learning rate, or load an earlier checkpoint")
    return loaded


def origin(info: RunInfo, source: str) -> Dict[str, Any]:
    """What a run started from, for its provenance: the source as given, its architecture, commit and val top-1."""
    code = info.provenance.get("code") or {}
    return dict(source=str(source), model=info.model, commit=code.get("commit"), val_top1=info.metrics.get("val_top1"))


def _is_head(src: torch.Tensor, dst: torch.Tensor, src_classes: int, dst_classes: int) -> bool:
    """A classifier tensor (any head: the main one, an auxiliary one) of a model whose class count changed."""
    return (src_classes != dst_classes and src.shape[1:] == dst.shape[1:] and src.ndim >= 1
            and (src.shape[0], dst.shape[0]) == (src_classes, dst_classes))


def init_from(model: nn.Module, source: str, loaded: Optional[LoadedModel] = None) -> Dict[str, Any]:
    """Load the weights of `source` (a run folder, model.safetensors, a .ckpt this project wrote, or a released name)
    into `model`: every tensor, but the classifier when the class count differs, which keeps its fresh initialisation.
    `loaded`: `load_model(source)`, when the caller has it already.

    Returns:
        `origin` of the source, for the run's provenance.

    Raises:
        WeightsError: any other tensor is missing, extra or of another shape (named), or the file cannot be read.
        FileNotFoundError: no such file, folder or released name.
    """
    loaded = loaded or load_model(source)
    src, dst = loaded.model.state_dict(), model.state_dict()
    src_classes, dst_classes = loaded.model.num_classes, getattr(model, "num_classes", None)
    heads = {k for k in set(src) & set(dst) if _is_head(src[k], dst[k], src_classes, dst_classes)}
    wrong = [*(f"{k} (missing)" for k in sorted(set(dst) - set(src))),
             *(f"{k} (not in the model)" for k in sorted(set(src) - set(dst))),
             *(f"{k} {tuple(src[k].shape)} vs {tuple(dst[k].shape)}" for k in sorted(set(src) & set(dst) - heads)
               if src[k].shape != dst[k].shape)]
    if wrong:
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        target = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
        raise WeightsError(f"ModelCfg.init_from: the weights of {source} ({loaded.info.model}) do not fit {target}: "
                         f"{'; '.join(wrong[:5])}{more}; start from a run of the same model and arguments")
    model.load_state_dict({k: v for k, v in src.items() if k not in heads}, strict=False)
    return origin(loaded.info, source)
