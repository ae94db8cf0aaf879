"""The training configuration: sections, each a frozen dataclass that checks itself where it is made.

    TrainConfig(recipe, model: ModelCfg, data: DataCfg, optim: OptimCfg, run: RunCfg)

`resolve_config` fills it from the sections' own defaults < recipe < --config YAML < command line; a section left
out of `TrainConfig(recipe=...)` is what that gives from the recipe alone, so `TrainConfig()` is the run of
`microdense train` with no flags and `TrainConfig(recipe="paper")` that of `microdense train --recipe paper`.
Every field has one dotted name ("optim.lr", "data.batch_size", "model.kwargs"): YAML files nest it in its section,
`--set` and the flags name it (each flag declares its field in `microdense_cli.TRAIN_FLAGS`), and the run folder's
`config.yaml` saves it. A configuration saved in the earlier flat layout (`lr: 0.1`, `model_kwargs: ...`) still
loads: `FLAT_LAYOUT` says where each of its fields went.
"""
import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from microdense.data.config import DataCfg
from microdense.errors import ArgumentError, ConfigError
from microdense.fields import check_fields, setting
from microdense.models.config import ModelCfg

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
RECIPES = tuple(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))  # the recipe files are the list
SCHEDULES = ("step", "cosine", "onecycle")
LR_SCALES = ("linear", "sqrt")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# NOTE: Lightning's precision names; on a CPU it runs only fp32, fp64 and bfloat16 (it would silently turn fp16 AMP
# into bf16, and has no fp16 or Transformer Engine kernels there).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16")
CPU_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "64-true")
SYNTHETIC_DEMO_EPOCHS = 3
PROVENANCE_KEY = "provenance"  # the part of a saved config.yaml that records what made the run, not a setting


@dataclass(frozen=True)
class OptimCfg:
    """What is minimised and how: the loss's smoothing and mixing, SGD, the learning-rate schedule, the EMA."""

    lr: float = setting(0.1, gt=0)  # peak learning rate, for lr_base_size images per step when that is set
    # the global batch (all devices and nodes) `lr` is stated for; a run scales it to its own by lr_scale, as timm's
    # train.py does (--lr-base, --lr-base-size); None: `lr` is used as it is at any batch
    lr_base_size: Optional[int] = setting(None, ge=1)
    lr_scale: str = setting("linear", choices=LR_SCALES)  # linear (SGD), or sqrt of the batch ratio
    momentum: float = setting(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = setting(1e-4, ge=0)  # conv and linear weights only, never BN parameters or biases
    schedule: str = setting("cosine", choices=SCHEDULES)
    milestones: List[float] = setting(default_factory=lambda: [0.5, 0.75], gt=0, lt=1)  # step: fractions of the run
    warmup_epochs: float = setting(0.0, ge=0)
    warmup_fraction: float = setting(0.0, ge=0, le=0.5)  # warm-up as a fraction of the run (instead of epochs)
    label_smoothing: float = setting(0.0, ge=0, lt=1)
    mixup: float = setting(0.0, ge=0)  # timm Mixup alpha; 0: off
    cutmix: float = setting(0.0, ge=0)  # timm CutMix alpha; 0: off
    aux_weight: float = setting(0.0, ge=0)  # weight of auxiliary-head losses, for models with `forward_train`
    grad_clip: Optional[float] = setting(None, gt=0)  # gradient norm clipping
    lookahead: bool = False  # wrap SGD in timm's Lookahead: every k steps the slow weights move alpha of the way
    lookahead_k: int = setting(6, ge=1)
    lookahead_alpha: float = setting(0.5, gt=0, le=1)
    ema_decay: float = setting(0.0, ge=0, lt=1)  # 0: off; e.g. 0.9998 keeps an EMA of the weights, used for validation

    def __post_init__(self) -> None:
        check_fields(self)
        if self.warmup_epochs and self.warmup_fraction:
            raise ConfigError("OptimCfg.warmup_fraction: warmup_epochs is set too; set one of them to 0")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("OptimCfg.nesterov: Nesterov momentum needs momentum > 0; set nesterov false or raise "
                             "momentum")


def peak_lr(optim: OptimCfg, global_batch: int) -> float:
    """The peak learning rate of a run whose steps take `global_batch` images in all (per-device batch x devices x
    nodes): `optim.lr` scaled from `optim.lr_base_size` images, linearly or by the square root."""
    if optim.lr_base_size is None:
        return optim.lr
    ratio = global_batch / optim.lr_base_size
    return optim.lr * (ratio if optim.lr_scale == "linear" else ratio ** 0.5)


@dataclass(frozen=True)
class RunCfg:
    """When a run stops, where it runs and saves, and how it validates."""

    epochs: Optional[int] = setting(None, ge=1)
    max_steps: int = setting(-1, ge=1, also=(-1,))  # stop after this many optimizer steps (-1: the epochs decide)
    time_budget: Optional[float] = setting(None, gt=0)  # minutes of training (validation and saving not counted)
    seed: int = setting(0, ge=0, lt=2 ** 32)
    out: Optional[str] = None  # run folder; default runs/<model>-<data>-<time>
    resume: bool = False
    restart: bool = False  # start anew in `out`, moving what it holds (a diverged run) into out/previous-N first
    devices: str = "auto"  # a count, "auto", "-1" (every GPU) or GPU indices like "0,1"
    num_nodes: int = setting(1, ge=1)
    accelerator: str = setting("auto", choices=ACCELERATORS)
    precision: str = setting("32-true", choices=PRECISIONS)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training forward (inductor; compiles at the first steps, CPU or GPU)
    deterministic: bool = False
    checkpoint_every: int = setting(0, ge=0)  # also save last.ckpt every N steps (0: at epoch ends only)
    val_flip: bool = False  # validate on the mean of each image's logits and its mirror image's (flip TTA)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.epochs is None and self.max_steps == -1 and self.time_budget is None:
            raise ConfigError("RunCfg.epochs: nothing says when to stop; set epochs (>= 1), max_steps (>= 1) or "
                             "time_budget (minutes)")
        on_cpu = _accelerator_is_cpu(self.accelerator)
        if on_cpu and self.precision not in CPU_PRECISIONS:
            raise ConfigError(f"RunCfg.precision: {self.precision!r} does not run on a CPU; choose one of "
                             f"{', '.join(CPU_PRECISIONS)}")
        _check_devices(self.devices, on_cpu)
        if self.resume and self.restart:
            raise ConfigError("RunCfg.restart: resume is set too; resume continues the run, restart starts it anew: "
                             "choose one")


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting, by section. Made only whole and valid: each section checks itself, and this the rules
    that join sections. A section left out is as `microdense train --recipe RECIPE` runs it with no other flag."""

    recipe: str = setting("fast", choices=RECIPES)  # the recipe the defaults came from
    # None (left out) becomes the recipe's section in __post_init__
    model: ModelCfg = setting(None)
    data: DataCfg = setting(None)
    optim: OptimCfg = setting(None)
    run: RunCfg = setting(None)

    def __post_init__(self) -> None:
        left_out = [name for name in SECTION_TYPES if getattr(self, name) is None]
        if left_out and self.recipe in RECIPES:  # another recipe value is refused by check_fields below
            values = _resolve_values({"recipe": self.recipe})
            for name in left_out:  # NOTE: frozen, so set as dataclasses' own __init__ does
                object.__setattr__(self, name, SECTION_TYPES[name](**values.get(name, {})))
        check_fields(self)
        if self.optim.warmup_epochs and self.run.epochs is None and self.run.max_steps == -1:
            raise ConfigError("OptimCfg.warmup_epochs: a run bounded by time_budget alone has no epochs to count; "
                             "set warmup_fraction instead")


SECTION_TYPES = dict(model=ModelCfg, data=DataCfg, optim=OptimCfg, run=RunCfg)
MERGED_MAPPINGS = ("model.kwargs",)  # mapping-valued fields whose keys merge across layers, as the sections' do
# every field, by its dotted name
FIELDS = ("recipe", *(f"{s}.{f.name}" for s, cls in SECTION_TYPES.items() for f in dataclasses.fields(cls)))
# the earlier flat layout (every committed run folder's config.yaml): each top-level name, and its field now
FLAT_LAYOUT = {"model": "model.name", "model_kwargs": "model.kwargs", "genotype": "model.kwargs.genotype",
               "num_classes": "model.num_classes", "drop_rate": "model.drop_rate",
               "drop_path_rate": "model.drop_path_rate",
               **{f.name: f"optim.{f.name}" for f in dataclasses.fields(OptimCfg)},
               **{f.name: f"run.{f.name}" for f in dataclasses.fields(RunCfg)}}
# every bare name a person may still type, and where its field is now
MOVED = {**FLAT_LAYOUT, **{f.name: f"data.{f.name}" for f in dataclasses.fields(DataCfg) if f.name != "name"}}


def _from_flat_layout(key: str, value: Any) -> Dict[str, Any]:
    """A field of the flat layout at its place now. Its drop rates of 0.0 meant "not passed to the model" then
    (the model's own default ruled), which is None now; an unset genotype was null."""
    if key in ("drop_rate", "drop_path_rate") and value == 0.0:
        value = None
    if key == "genotype" and value is None:
        return {}
    return {FLAT_LAYOUT[key]: value}


def _put(out: Dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set dotted field `key` in the nested values `out`, refusing a name that is no field."""
    if key.startswith("model.kwargs."):  # one family argument, e.g. model.kwargs.genotype
        out.setdefault("model", {}).setdefault("kwargs", {})[key.split(".", 2)[2]] = value
        return
    if key not in FIELDS:
        if key in MOVED:
            hint = f"; it moved to {MOVED[key]}"
        else:
            close = difflib.get_close_matches(key, FIELDS, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `microdense train --help` lists the fields"
        raise ConfigError(f"{where} names unknown field {key!r}{hint}")
    section, _, name = key.partition(".")
    if not name:
        out[key] = value
    elif key in MERGED_MAPPINGS and isinstance(value, dict):  # beside single keys set in the same layer
        out.setdefault(section, {}).setdefault(name, {}).update(value)
    else:
        out.setdefault(section, {})[name] = value


def nest(values: Dict[str, Any], where: str, legacy: bool = False) -> Dict[str, Any]:
    """A layer of values (sections as mappings, or dotted names) as {section: {field: value}}, every name checked.

    `legacy`: also read the flat layout's names (files); otherwise such a name is refused with where it went.
    """
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if legacy and key in FLAT_LAYOUT and not (key in SECTION_TYPES and isinstance(value, dict)):
            for k, v in _from_flat_layout(key, value).items():
                _put(out, k, v, where)
        elif key in SECTION_TYPES:
            if not isinstance(value, dict):
                raise ArgumentError(f"TrainConfig.{key}: needs a mapping, got {value!r}")
            for name, v in value.items():
                _put(out, f"{key}.{name}", v, where)
        else:
            _put(out, key, value, where)
    kwargs = out.get("model", {}).get("kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ArgumentError(f"ModelCfg.kwargs: needs a mapping, got {kwargs!r}")
    return out


def read_values(path: Path, what: str) -> Dict[str, Any]:
    """A YAML file of training fields (either layout; a run's provenance record dropped) as nested values."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping of field: value")
    saved_by_a_run = data.pop(PROVENANCE_KEY, None) is not None or "model_kwargs" in data  # either layout's mark
    values = nest(data, f"{what} {path}", legacy=True)
    if saved_by_a_run and "lr_base_size" not in values.get("optim", {}):
        # NOTE: saved before rates followed the batch: the run used its rate as given, and resumes so
        values.setdefault("optim", {})["lr_base_size"] = None
    return values


def recipe_values(name: str) -> Dict[str, Any]:
    if name not in RECIPES:
        raise ConfigError(f"TrainConfig.recipe: unknown value {name!r}; choose one of {', '.join(RECIPES)}")
    return read_values(RECIPE_DIR / f"{name}.yaml", "recipe")


def merge(*layers: Dict[str, Any]) -> Dict[str, Any]:
    """Nested layers, later ones winning field by field (and key by key inside `model.kwargs`)."""
    out: Dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in SECTION_TYPES:
                out[key] = value
                continue
            section = out.setdefault(key, {})
            for name, v in value.items():
                if f"{key}.{name}" in MERGED_MAPPINGS and isinstance(v, dict):
                    section[name] = {**section.get(name, {}), **v}
                else:
                    section[name] = v
    return out


def make_config(values: Dict[str, Any]) -> TrainConfig:
    """A TrainConfig from nested values; each section checks itself as it is made."""
    sections = {name: cls(**values.get(name, {})) for name, cls in SECTION_TYPES.items()}
    return TrainConfig(**{k: v for k, v in values.items() if k not in SECTION_TYPES}, **sections)


def resolve_config(cli: Dict[str, Any], config_file: Optional[str] = None) -> TrainConfig:
    """Merge the sections' defaults < recipe < YAML file < command-line values into one checked configuration.

    `cli` maps dotted field names ("optim.lr") to values (None: not given).

    Raises:
        ConfigError, ArgumentError: one line naming the field, the value and what is allowed.
    """
    return make_config(_resolve_values(cli, config_file))


def _resolve_values(cli: Dict[str, Any], config_file: Optional[str] = None) -> Dict[str, Any]:
    """`resolve_config`'s nested values, before any section is made."""
    from_file = read_values(Path(config_file), "config file") if config_file else {}
    given = nest({k: v for k, v in cli.items() if v is not None}, "the command line")
    recipe = given.get("recipe", from_file.get("recipe", TrainConfig.recipe))
    if not isinstance(recipe, str):
        raise ArgumentError(f"TrainConfig.recipe: needs a string, got {recipe!r}")
    values = merge(recipe_values(recipe), from_file, given, {"recipe": recipe})
    asked = any("epochs" in layer.get("run", {}) for layer in (from_file, given))
    if not asked and values.get("data", {}).get("name", "synthetic") == "synthetic":
        # NOTE: synthetic data is a demo: it runs a few epochs unless epochs are asked for explicitly.
        values.setdefault("run", {})["epochs"] = SYNTHETIC_DEMO_EPOCHS
    return values


def _accelerator_is_cpu(accelerator: str) -> bool:
    if accelerator == "cpu":
        return True
    if accelerator != "auto":
        return False
    import torch
    return not torch.cuda.is_available() and not torch.backends.mps.is_available()


def _check_devices(devices: str, on_cpu: bool) -> None:
    text = str(devices).strip()
    allowed = "a count >= 1 or 'auto'" if on_cpu else "a count >= 1, 'auto', '-1' (every GPU) or indices like '0,1'"
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return
    if not on_cpu and (text == "-1" or all(p.strip().isdigit() for p in text.split(","))):
        return
    raise ConfigError(f"RunCfg.devices: {devices!r} is not allowed here; use {allowed}")


def save_config(cfg: TrainConfig, provenance: Optional[Dict[str, Any]] = None) -> str:
    """The run folder's config.yaml: every field by section, then (when given) the record of the code, machine and
    data."""
    text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    if provenance is not None:
        text += yaml.safe_dump({PROVENANCE_KEY: provenance}, sort_keys=False)
    return text
