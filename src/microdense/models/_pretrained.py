"""Released weights: trained networks that ship inside the package and load offline, through timm's own loader.

A release is `weights/<model>.<tag>.safetensors` (e.g. `microdensenet_cifar_tiny.cifar10.safetensors`) beside its
model card `<model>.<tag>.md`. The file's header carries, as string metadata, what feeding the network needs and what
made it: `architecture`, `tag`, `classes` (JSON list, class names by index), `mean`, `std`, `input_size` (JSON lists),
`crop_pct`, `num_classes` and `record` (JSON: data, recipe, epochs, seed, commit, val_top1, val_top5, command).
`microdense.deploy.release` writes releases; this module finds and reads them:

    timm.create_model("microdensenet_cifar_tiny", pretrained=True)                 # the model's default tag
    timm.create_model("microdensenet_cifar_tiny.cifar10", pretrained=True)         # a tag by name
    timm.create_model("microdensenet_cifar_tiny", pretrained=True, num_classes=3)  # a new 3-way classifier

Every family creates its models through `build_model_with_release`, which looks the release up when a model is made
(so tests can point `weights_dir` elsewhere) and hands it to timm as a `pretrained_cfg_overlay`, and registers its
pretrained cfgs through `generate_release_cfgs`, which marks the shipped ones so that `timm.list_pretrained()` lists
them.
"""
import glob
import json
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from safetensors import SafetensorError, safe_open
from timm.models import build_model_with_cfg, generate_default_cfgs, get_pretrained_cfg, is_model, split_model_name_tag

from microdense.errors import ConfigError, WeightsError

__all__ = ["build_model_with_release", "generate_release_cfgs", "parse_release_name", "pretrained_overlay",
           "read_release", "release_metadata", "released", "require_release", "weights_dir"]

SUFFIX = ".safetensors"
JSON_KEYS = ("classes", "mean", "std", "input_size", "crop_pct", "num_classes", "record")
METADATA_KEYS = ("architecture", "tag", *JSON_KEYS)
# NOTE: where timm reads pretrained weights from; a caller who names one (local-dir:, hf-hub:, file=...) chose them.
SOURCE_KEYS = ("file", "url", "state_dict", "hf_hub_id")


def weights_dir() -> Path:
    """The package folder that holds the released weights and their model cards."""
    return Path(__file__).resolve().parent.parent / "weights"


def _default_tag(model_name: str) -> Optional[str]:
    cfg = get_pretrained_cfg(model_name) if is_model(model_name) else None
    return cfg.tag if cfg is not None else None


def released(model_name: str, tag: Optional[str] = None) -> Optional[Tuple[str, Path]]:
    """(tag, path) of the release of `model_name`, or None when it has none.

    With no `tag`: the release under the model's default timm tag (e.g. `cifar10`) if there is one, else the first
    by name.
    """
    folder = weights_dir()
    if tag is not None:
        path = folder / f"{model_name}.{tag}{SUFFIX}"
        return (tag, path) if path.is_file() else None
    found = {p.name[len(model_name) + 1:-len(SUFFIX)]: p
             for p in sorted(folder.glob(f"{glob.escape(model_name)}.*{SUFFIX}")) if p.is_file()}
    if not found:
        return None
    first = _default_tag(model_name)
    tag = first if first in found else next(iter(found))
    return tag, found[tag]


def require_release(model_name: str, tag: Optional[str] = None) -> Tuple[str, Path]:
    """`released(model_name, tag)`, or the one-line error that says what to do instead.

    Raises:
        ConfigError: there is no such release.
    """
    found = released(model_name, tag)
    if found is None:
        what = f"{model_name}.{tag}" if tag else model_name
        raise ConfigError(f"{what} has no released weights (no {what}{'' if tag else '.*'}{SUFFIX} in "
                         f"{weights_dir()}); train one with `microdense train` and load its run folder instead (in "
                         "timm: create_model('local-dir:RUN', pretrained=True))")
    return found


def parse_release_name(text: str) -> Optional[Tuple[str, Optional[str]]]:
    """(model, tag or None) when `text` is a registered model name, bare or with a tag (`model.tag`); else None."""
    if not text or "/" in text or "\\" in text:
        return None
    model, tag = split_model_name_tag(text)
    return (model, tag or None) if is_model(model) else None


def release_metadata(architecture: str, tag: str, classes: Sequence[str], mean: Sequence[float],
                     std: Sequence[float], input_size: Sequence[int], crop_pct: float,
                     record: Dict[str, Any]) -> Dict[str, str]:
    """The header metadata of a release (safetensors takes strings only): what `read_release` reads back."""
    values = dict(classes=list(classes), mean=[float(v) for v in mean], std=[float(v) for v in std],
                  input_size=[int(v) for v in input_size], crop_pct=float(crop_pct), num_classes=len(classes),
                  record=record)
    return dict(architecture=architecture, tag=tag, **{k: json.dumps(values[k]) for k in JSON_KEYS})


# the fix for a release that cannot be read
RESTORE = "restore the file from the package or release it again"


def read_release(path: Any) -> Dict[str, Any]:
    """The metadata of a release, parsed: architecture, tag, classes (list), mean, std, input_size (tuples),
    crop_pct, num_classes and record (dict).

    Raises:
        FileNotFoundError: no such file.
        WeightsError: the file is truncated or corrupt, or is not a release (its header lacks the metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"released weights {path} do not exist")
    try:
        # NOTE: safe_open checks the header and that the tensors it lists cover the file: a truncated file fails here.
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
    except SafetensorError as e:
        raise WeightsError.corrupt(f"released weights {path} are", e, RESTORE) from None
    missing = [k for k in METADATA_KEYS if k not in raw]
    if missing:
        raise WeightsError(f"{path} is not a microdense release: its header lacks {', '.join(missing)}")
    try:
        meta = {**{k: raw[k] for k in ("architecture", "tag")}, **{k: json.loads(raw[k]) for k in JSON_KEYS}}
        return dict(meta, mean=tuple(meta["mean"]), std=tuple(meta["std"]), input_size=tuple(meta["input_size"]),
                    classes=list(meta["classes"]), num_classes=int(meta["num_classes"]),
                    crop_pct=float(meta["crop_pct"]))
    except (json.JSONDecodeError, TypeError, ValueError) as e:  # not JSON, or JSON holding the wrong kind of value
        raise WeightsError.corrupt(f"released weights {path} are", f"metadata is not valid: {e}", RESTORE) from None


def pretrained_overlay(variant: str, pretrained: bool, tag: Optional[str] = None) -> Dict[str, Any]:
    """timm's `pretrained_cfg_overlay` for the release of `variant` (under `tag`, or the default one): the file to
    load and the data config it was trained with. Empty when not `pretrained`.

    Raises:
        ConfigError: `pretrained` and no release exists (one line, saying what to do instead). WeightsError: the file is
            truncated, corrupt or another architecture's.
    """
    if not pretrained:
        return {}
    tag, path = require_release(variant, tag)
    meta = read_release(path)
    if meta["architecture"] != variant:
        raise WeightsError(f"released weights {path} are {meta['architecture']}'s, not {variant}'s; rename or remove "
                         "the file")
    return dict(_data_cfg(path, meta), tag=tag)


def _data_cfg(path: Path, meta: Dict[str, Any]) -> Dict[str, Any]:
    """The pretrained_cfg entries a release sets: its file and the data config its weights were trained with."""
    return dict(file=str(path), num_classes=meta["num_classes"], mean=meta["mean"], std=meta["std"],
                input_size=meta["input_size"], crop_pct=meta["crop_pct"], label_names=tuple(meta["classes"]))


def build_model_with_release(model_cls: Callable[..., Any], variant: str, pretrained: bool, **kwargs: Any) -> Any:
    """timm's `build_model_with_cfg`, where `pretrained=True` loads this package's release of `variant` (read now).

    timm itself loads the file and, when `num_classes` differs from the release's, leaves the new classifier as
    initialised. A caller who names a source of their own (`local-dir:`, `hf-hub:`, a `file` overlay) gets it as timm
    would load it.
    """
    cfg = kwargs.get("pretrained_cfg")
    overlay = dict(kwargs.get("pretrained_cfg_overlay") or {})
    own_source = (cfg is not None and not isinstance(cfg, str)) or any(overlay.get(k) for k in SOURCE_KEYS)
    if pretrained and not own_source:
        kwargs["pretrained_cfg_overlay"] = {**pretrained_overlay(variant, True, cfg or None), **overlay}
    return build_model_with_cfg(model_cls, variant, pretrained, **kwargs)


def generate_release_cfgs(cfgs: Dict[str, Dict[str, Any]]) -> Any:
    """timm's `generate_default_cfgs`, where each `model.tag` cfg whose release ships in `weights_dir()` names its file
    and the data config in its header (mean/std, input size, crop, class names), as timm's cfgs describe their weights.

    timm lists a model as pretrained (`list_pretrained`, `is_model_pretrained`) only when its cfg names a source, so
    the shipped releases are marked when a family is registered; what `pretrained=True` loads is still looked up when
    the model is made.
    """
    marked = {}
    for name, cfg in cfgs.items():
        model, tag = split_model_name_tag(name)
        found = released(model, tag) if tag else None
        if found:
            try:
                cfg = {**cfg, **_data_cfg(found[1], read_release(found[1]))}
            except WeightsError:  # NOTE: a damaged file must not break `import microdense`; pretrained=True says why
                cfg = {**cfg, "file": str(found[1])}
        marked[name] = cfg
    return generate_default_cfgs(marked)
