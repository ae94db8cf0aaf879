"""A finished run folder as released weights: `<model>.<tag>.safetensors` (float32 weights, and in its header what
feeding the network needs and what made it) and its model card `<model>.<tag>.md`, by default into the package's
`weights/` folder, where `timm.create_model(model, pretrained=True)` finds them (`microdense.models._pretrained`).

    release_weights("runs/tiny-c10", "cifar10", command="microdense train --model ... --seed 0")

`scripts/release-weights.sh RUN TAG "COMMAND"` runs it.
"""
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from safetensors.torch import save_file

from microdense.errors import ConfigError
from microdense.io import atomic_path, atomic_write_text
from microdense.models import create_model
from microdense.models._pretrained import SUFFIX, release_metadata, weights_dir
from microdense.saved.run_folder import COMMAND_FILE, METRICS_FILE, SavedConfig, read_metrics, read_saved_config
from microdense.saved.trained_model import RunInfo
from microdense.saved.weights_source import load_model

__all__ = ["release_weights"]

TAG_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
# NOTE: arguments that change training alone, not the network a plain timm.create_model(name) builds.
TRAINING_ONLY_ARGS = ("num_classes", "drop_rate", "drop_path_rate", "memory_efficient")
# the recipe values a card names, as dotted fields of the run's config.yaml: always, and when they are set
KEY_SETTINGS = ("optim.lr", "data.batch_size", "optim.schedule", "optim.weight_decay", "optim.label_smoothing",
                "run.precision")
SET_SETTINGS = ("optim.lr_base_size", "optim.ema_decay", "optim.mixup", "optim.cutmix", "data.cutout",
                "data.randaugment", "run.time_budget", "run.max_steps", "model.pretrained", "model.init_from")


def _check_registered_architecture(info: RunInfo, state: Dict[str, torch.Tensor], run_dir: Path) -> None:
    """Refuse a run whose network is not the one `timm.create_model(info.model)` builds: its release would not load."""
    extra = sorted(k for k in info.model_args if k not in TRAINING_ONLY_ARGS)
    if extra:
        raise ConfigError(f"{run_dir} was built with model arguments {extra} that the registered {info.model} does "
                         "not have; only a network timm.create_model builds from its name can be released")
    with torch.device("meta"):
        reference = create_model(info.model, num_classes=len(info.classes)).state_dict()
    wrong = sorted(k for k in set(reference) | set(state)
                   if k not in reference or k not in state or reference[k].shape != state[k].shape)
    if wrong:
        raise ConfigError(f"{run_dir}'s weights do not fit the registered {info.model}: {', '.join(wrong[:5])}"
                         f"{' ...' if len(wrong) > 5 else ''}")


def command_of(run_dir: Path, command: Optional[str]) -> str:
    """The command that reproduces the run in `run_dir`: `command`, or the file RUN/command.

    Raises:
        ConfigError: neither gives one.
    """
    if command is None and (run_dir / COMMAND_FILE).is_file():
        command = (run_dir / COMMAND_FILE).read_text()
    if not command or not command.strip():
        raise ConfigError(f"no command for {run_dir}'s release: give the command that reproduces the run, or write it "
                          "to the file RUN/command")
    return command.strip()


def run_record(run_dir: Path, info: RunInfo, saved: SavedConfig, command: str,
               data_note: Optional[str] = None) -> Dict[str, Any]:
    """What made the weights: the release header's `record`."""
    rows = read_metrics(run_dir / METRICS_FILE)
    data = dict(info.provenance.get("data") or {"name": saved.get("data.name")})
    data["val_split"] = saved.get("data.val_split")
    data["root"] = saved.get("data.root")
    if data_note:
        data["about"] = data_note
    settings = {}
    for key in (*KEY_SETTINGS, *SET_SETTINGS):
        value = saved.get(key)
        if value is not None and (key in KEY_SETTINGS or value not in (False, 0, -1)):
            settings[key] = value
    code = info.provenance.get("code") or {}
    return dict(
        data=data, recipe=saved.get("recipe"), settings=settings,
        epochs=_number(rows[-1]["epoch"]) if rows else saved.get("run.epochs"),
        steps=int(rows[-1]["step"]) if rows else None, seed=saved.get("run.seed", 0), commit=code.get("commit"),
        dirty=code.get("dirty"), val_flip=bool(saved.get("run.val_flip")), val_top1=info.metrics.get("val_top1"),
        val_top5=info.metrics.get("val_top5"), command=command)


def _number(text: str) -> float:
    value = float(text)
    return int(value) if value.is_integer() else value


def _rounded(values: Any) -> str:
    return "(" + ", ".join(f"{v:.4f}" for v in values) + ")"


def _percent(value: Optional[float]) -> str:
    return "not measured" if value is None else f"{100 * value:.2f}%"


def packaged_load(model: str) -> List[str]:
    """The card's "Load" lines for a release in the package's weights folder."""
    return [f'model = timm.create_model("{model}", pretrained=True)          # this release, offline',
            f'model = timm.create_model("{model}", pretrained=True, num_classes=3)  # a new 3-way classifier']


def hub_load(name: str) -> List[str]:
    """The card's "Load" lines for a folder in the model hubs' layout, here or uploaded."""
    return ['model = timm.create_model("local-dir:FOLDER", pretrained=True)   # this folder, where it lies',
            f'model = timm.create_model("hf-hub:USER/{name}", pretrained=True)  # once uploaded to a model hub']


def model_card(name: str, info: RunInfo, record: Dict[str, Any], params: int, sha256: str,
               hub_folder: bool = False) -> str:
    """The Markdown card of release `name`: `model.tag` in the package's weights folder, or with `hub_folder` the
    name of a folder in the model hubs' layout (`microdense.deploy.hub`), which loads from its own path."""
    data = record["data"]
    per_class = data.get("per_class") or {}
    images = f"{data['images']:,} images" if data.get("images") is not None else "image count not recorded"
    held = f", {data['val_split']:g} of them held out for validation" if data.get("val_split") else ""
    source = f"{data.get('name')} at `{data['root']}`" if data.get("root") else data.get("name")
    if data.get("about"):
        source = f"{data['about']}; {source}"
    # NOTE: without a held-out split the run validated on what its data module gave (e.g. a dataset's test split).
    measured_on = ", ".join((["the held-out images"] if data.get("val_split") else [])
                            + (["each averaged with its mirror (`--flip`)"] if record.get("val_flip") else []))
    measured_on = f" ({measured_on})" if measured_on else ""
    flip = " --flip" if record.get("val_flip") else ""
    fingerprint = (f"; SHA-256 of its {data.get('hashed', 'contents')}: `{data['sha256']}`" if data.get("sha256")
                   else "; no fingerprint recorded")
    settings = ", ".join(f"{k.split('.')[1]} {v}" for k, v in record["settings"].items()) or "its defaults"
    commit = record["commit"] or "not recorded"
    if record.get("dirty"):
        commit += " (with uncommitted changes)"
    c, h, w = info.input_size
    checkpoint = name if not hub_folder else "FOLDER"
    lines = [
        f"# {name}",
        "",
        f"`{info.model}` ({params / 1e6:.3f}M parameters) trained on {data.get('name')}: {len(info.classes)} classes, "
        f"input {c}x{h}x{w}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| file | `{'model.safetensors' if hub_folder else name + SUFFIX}`, SHA-256 `{sha256}` |",
        f"| classes | {', '.join(info.classes)} |",
        f"| input | {c}x{h}x{w}, mean {_rounded(info.mean)}, std {_rounded(info.std)}, crop_pct {info.crop_pct} |",
        f"| data | {source}: {images} ({len(per_class) or len(info.classes)} classes){held}{fingerprint} |",
        f"| recipe | {record['recipe']}: {settings} |",
        f"| epochs | {record['epochs']}" + (f" ({record['steps']} steps)" if record.get("steps") else "") + " |",
        f"| seed | {record['seed']} |",
        f"| commit | {commit} |",
        f"| val top-1 / top-5{measured_on} | {_percent(record['val_top1'])} / {_percent(record['val_top5'])} |",
        "",
        "## Load",
        "",
        "```python",
        "import timm, microdense",
        *(hub_load(name) if hub_folder else packaged_load(info.model)),
        "```",
        "",
        f"`microdense predict --checkpoint {checkpoint} IMAGES`, `microdense eval --checkpoint {checkpoint} "
        f"...{flip}`; fine-tune with `microdense train --model {info.model} "
        + ("--init-from FOLDER`." if hub_folder else f"--pretrained ...` or `--init-from {name}`."),
        "",
        "## The command that reproduces it",
        "",
        "```bash",
        record["command"],
        "```",
        "",
        "Give it an `--out` folder of its own (a study skips the runs its folder already has rows for); "
        + (f"`microdense export --checkpoint RUN_FOLDER --format hub --out {name}`" if hub_folder else
           f"`scripts/release-weights.sh RUN_FOLDER {name.split('.', 1)[1]} \"COMMAND\"`")
        + " then releases the run folder it made.",
        "",
    ]
    return "\n".join(lines)


def release_weights(run_dir: os.PathLike, tag: str, out_dir: Optional[os.PathLike] = None,
                    command: Optional[str] = None, data_note: Optional[str] = None) -> Path:
    """Release the weights of the finished run in `run_dir` as `<model>.<tag>.safetensors` and its card
    `<model>.<tag>.md` in `out_dir` (default: the package's weights folder); returns the weights file.

    Args:
        run_dir: a run folder `microdense train` finished (model.safetensors, config.json, config.yaml).
        tag: the release's name after the model's, e.g. "cifar10" (lower-case letters, digits, '_' and '-').
        out_dir: where to write; default `microdense.models._pretrained.weights_dir()`.
        command: the command that reproduces the run; None reads it from the file `run_dir/command`.
        data_note: what the data is, in words, for the card (its name, path and fingerprint are recorded anyway).

    Raises:
        ConfigError: a bad tag, no command, or a run of another architecture than the registered one.
        WeightsError: weights that are truncated, corrupt or not finite.
        FileNotFoundError, FileExistsError: the run folder lacks a file, or the release exists already.
    """
    run_dir = Path(run_dir)
    if not TAG_PATTERN.fullmatch(tag):
        raise ConfigError(f"release tag {tag!r} must be lower-case letters, digits, '_' and '-', e.g. cifar10")
    command = command_of(run_dir, command)
    saved = read_saved_config(run_dir)
    loaded = load_model(run_dir)
    info = loaded.info
    state = {k: (v.float() if v.is_floating_point() else v).contiguous()
             for k, v in loaded.model.state_dict().items()}
    _check_registered_architecture(info, state, run_dir)
    out_dir = Path(out_dir) if out_dir is not None else weights_dir()
    name = f"{info.model}.{tag}"
    weights, card = out_dir / f"{name}{SUFFIX}", out_dir / f"{name}.md"
    for path in (weights, card):
        if path.exists():
            raise FileExistsError(f"{path} exists already; remove it to release {name} again")
    record = run_record(run_dir, info, saved, command, data_note)
    metadata = release_metadata(info.model, tag, info.classes, info.mean, info.std, info.input_size, info.crop_pct,
                                record)
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp), metadata=metadata)
        sha256 = hashlib.sha256(tmp.read_bytes()).hexdigest()
    params = sum(p.numel() for p in loaded.model.parameters())
    atomic_write_text(card, model_card(name, info, record, params, sha256))
    return weights

