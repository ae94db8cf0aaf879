"""Where a model's weights come from, resolved once: `WeightsSource`.

Every command that starts from trained weights takes the same four kinds of source:

    microdensenet_cifar_tiny.cifar10    a release (`model.tag`; a bare registered name: its default release)
    RUN                                 a run folder `microdense train` finished (its model.safetensors export)
    RUN/model.safetensors               that export, by its file
    RUN/checkpoints/best.ckpt           a Lightning checkpoint this project wrote

`WeightsSource.resolve` tells them apart (an existing path wins over a release of the same name) and reads nothing;
the source's record (`info`) and its network (`loaded`) are read once, when first asked for, and only safely:
safetensors, or `torch.load(weights_only=True)`, which never unpickles code. `microdense train --pretrained` and
`--init-from` (`start_source`, `init_from`), `eval`, `predict`, `export` (the hub layout too) and releases all
start here.
"""
import json
import os
import pickle
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
from safetensors import SafetensorError

from microdense.errors import ConfigError, WeightsError
from microdense.models import create_model
from microdense.models._pretrained import parse_release_name, pretrained_overlay, read_release, require_release
from microdense.models.config import ModelCfg
from microdense.saved.run_folder import CHECKPOINT_DIR, CONFIG_FILE, last_checkpoint
from microdense.saved.trained_model import CONFIG, RUN_INFO_KEY, WEIGHTS, LoadedModel, RunInfo, nonfinite

__all__ = ["WeightsSource", "init_from", "load_model", "start_source"]


@dataclass(frozen=True)
class WeightsSource:
    """One source of trained weights, found: a release, a run folder, its model.safetensors, or a .ckpt."""

    text: str  # as given: what messages and the provenance name it by
    path: Path  # the folder or file its weights are read from (a release: its file in the package's weights folder)
    release: Optional[Tuple[str, str]] = None  # (model, tag) of a release

    @classmethod
    def find(cls, text: Union[str, os.PathLike], field: Optional[str] = None) -> Optional["WeightsSource"]:
        """The source `text` names, or None when it names nothing. `field`: the setting it came from, for messages.

        Raises:
            ConfigError: a registered model name without such a release.
        """
        text = str(text)
        if text and Path(text).exists():
            return cls(text, Path(text))
        named = parse_release_name(text)
        return None if named is None else cls.released(*named, field=field, text=text)

    @classmethod
    def resolve(cls, text: Union[str, os.PathLike], field: Optional[str] = None) -> "WeightsSource":
        """`find`, or the one-line error that says what to give instead.

        Raises:
            FileNotFoundError: `text` names no file, folder or release. ConfigError: a release that does not exist.
        """
        found = cls.find(text, field)
        if found is None:
            where = f"{field}: {str(text)!r}" if field else f"checkpoint {text}"
            raise FileNotFoundError(f"{where} does not exist; give a run folder, {WEIGHTS}, a .ckpt or a released "
                                    "name such as microdensenet_cifar_tiny.cifar10")
        return found

    @classmethod
    def released(cls, model: str, tag: Optional[str] = None, field: Optional[str] = None,
                 text: Optional[str] = None) -> "WeightsSource":
        """The release of `model` under `tag` (None: its default), named `text` (default `model.tag`).

        Raises:
            ConfigError: there is no such release.
        """
        try:
            tag, path = require_release(model, tag)
        except ConfigError as e:
            if field is None:
                raise
            raise ConfigError(f"{field}: {e}") from None
        return cls(text or f"{model}.{tag}", path, (model, tag))

    @property
    def run_dir(self) -> Optional[Path]:
        """The run folder the weights were saved in (its config.yaml and metrics); None for a release."""
        if self.release:
            return None
        if self.path.is_dir():
            return self.path
        return self.path.parent.parent if self.path.parent.name == CHECKPOINT_DIR else self.path.parent

    @cached_property
    def info(self) -> RunInfo:
        """The record of the weights: a release's read from its file's header alone, any other's with its network."""
        return _release_info(self.path, *self.release) if self.release else self.loaded.info

    @cached_property
    def loaded(self) -> LoadedModel:
        """The network rebuilt with these weights.

        Raises:
            WeightsError: the file is truncated, corrupt, unsafe or not microdense's, or its weights hold NaN or inf.
            FileNotFoundError: a run folder without its weights.
        """
        if self.release:
            model, tag = self.release
            info = self.info
            # NOTE: the overlay names the file, so timm loads exactly this release (any tag, registered or not).
            overlay = pretrained_overlay(model, True, tag)
            loaded = LoadedModel(create_model(model, pretrained=True, pretrained_cfg_overlay=overlay), info)
        elif self.path.is_dir():
            loaded = _load_export(self.path)
        elif self.path.suffix == ".safetensors":
            loaded = _load_export(self.path.parent)
        else:
            loaded = _load_lightning(self.path)
        bad = nonfinite(loaded.model.state_dict())
        if bad:
            raise WeightsError(f"checkpoint {self.text} holds NaN or inf ({', '.join(bad[:3])}"
                               f"{' ...' if len(bad) > 3 else ''}): its run diverged; train again with a lower "
                               "learning rate, or load an earlier checkpoint")
        return loaded

    def origin(self) -> Dict[str, Any]:
        """What a run started from, for its provenance: the source as given, its architecture, commit and val top-1."""
        code = self.info.provenance.get("code") or {}
        return dict(source=self.text, model=self.info.model, commit=code.get("commit"),
                    val_top1=self.info.metrics.get("val_top1"))


def load_model(source: Union[str, os.PathLike]) -> LoadedModel:
    """The network saved at `source` (any that `WeightsSource.resolve` takes), rebuilt with its record."""
    return WeightsSource.resolve(source).loaded


def start_source(cfg: ModelCfg) -> Optional[WeightsSource]:
    """The weights a run of `cfg` starts from, found (not read) before the run makes its folder: `init_from`'s, the
    release `pretrained` loads, or None for a run from scratch.

    Raises:
        ConfigError: no such release. FileNotFoundError: no such file or folder.
    """
    if cfg.pretrained:
        return WeightsSource.released(cfg.name, field="ModelCfg.pretrained")
    if cfg.init_from is not None:
        return WeightsSource.resolve(cfg.init_from, field="ModelCfg.init_from")
    return None


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


def _release_info(path: Path, model: str, tag: str) -> RunInfo:
    """The RunInfo the header of release `model.tag` (its file `path`) holds.

    Raises:
        WeightsError: its file is truncated or corrupt.
    """
    meta = read_release(path)
    record = meta["record"]
    return RunInfo(
        model=model, model_args=dict(num_classes=meta["num_classes"]), classes=meta["classes"], mean=meta["mean"],
        std=meta["std"], input_size=meta["input_size"], crop_pct=meta["crop_pct"],
        metrics={k: record.get(k) for k in ("val_top1", "val_top5")},
        provenance=dict(release=f"{model}.{tag}", code=dict(commit=record.get("commit")),
                        data={**(record.get("data") or {}), "seed": record.get("seed")}))


def _is_head(src: torch.Tensor, dst: torch.Tensor, src_classes: int, dst_classes: int) -> bool:
    """A classifier tensor (any head: the main one, an auxiliary one) of a model whose class count changed."""
    return (src_classes != dst_classes and src.shape[1:] == dst.shape[1:] and src.ndim >= 1
            and (src.shape[0], dst.shape[0]) == (src_classes, dst_classes))


def init_from(model: nn.Module, source: Union[str, WeightsSource]) -> Dict[str, Any]:
    """Load the weights of `source` (found, or as given: `WeightsSource.resolve`) into `model`: every tensor, but the
    classifier when the class count differs, which keeps its fresh initialisation.

    Returns:
        `origin` of the source, for the run's provenance.

    Raises:
        WeightsError: any other tensor is missing, extra or of another shape (named), or the file cannot be read.
        FileNotFoundError: no such file, folder or released name.
    """
    source = source if isinstance(source, WeightsSource) else WeightsSource.resolve(source)
    loaded = source.loaded
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
        raise WeightsError(f"ModelCfg.init_from: the weights of {source.text} ({loaded.info.model}) do not fit "
                           f"{target}: {'; '.join(wrong[:5])}{more}; start from a run of the same model and arguments")
    model.load_state_dict({k: v for k, v in src.items() if k not in heads}, strict=False)
    return source.origin()
