"""The training configuration: one dataclass, filled from defaults < recipe < --config YAML < flags.

Every field is settable from a YAML file and from the command line; the resolved configuration is
saved in the run folder so a run can be repeated exactly.
"""
import dataclasses
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from microdense.data.config import DataCfg
from microdense.fields import check_fields, setting

RECIPES = ("paper", "fast", "budget", "imagenet", "darts")
SCHEDULES = ("step", "cosine", "onecycle")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
# NOTE: Lightning's precision names; on a CPU it runs only fp32, fp64 and bfloat16 (it would silently turn fp16 AMP
# into bf16, and has no fp16 or Transformer Engine kernels there).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "transformer-engine",
              "transformer-engine-float16")
CPU_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "64-true")
SYNTHETIC_DEMO_EPOCHS = 3
PROVENANCE_KEY = "provenance"  # the section of a saved config.yaml that records what made the run


@dataclass
class TrainConfig:
    """Every training setting. `setting(...)` states the values each field allows; `validate_config` enforces them."""

    # what to train on what
    model: str = "microdensenet_cifar_tiny"
    model_kwargs: Dict[str, Any] = setting(default_factory=dict)  # extra timm.create_model kwargs (block fields...)
    genotype: Optional[str] = None  # DARTS-space models: a name, JSON file/text or Genotype(...) string
    num_classes: Optional[int] = setting(None, ge=2)  # None: from the data
    data: DataCfg = setting(default_factory=DataCfg)  # what to load, and how to split, batch and augment it
    # schedule (the recipe fills these)
    recipe: str = setting("fast", choices=RECIPES)
    epochs: Optional[int] = setting(None, ge=1)
    max_steps: int = setting(-1, ge=1, also=(-1,))  # stop after this many optimizer steps (-1: the epochs decide)
    time_budget: Optional[float] = setting(None, gt=0)  # minutes of training (validation and saving not counted)
    lr: float = setting(0.1, gt=0)
    momentum: float = setting(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = setting(1e-4, ge=0)
    schedule: str = setting("cosine", choices=SCHEDULES)
    milestones: List[float] = setting(default_factory=lambda: [0.5, 0.75], gt=0, lt=1)  # step: fractions of the run
    warmup_epochs: float = setting(0.0, ge=0)
    warmup_fraction: float = setting(0.0, ge=0, le=0.5)  # warm-up as a fraction of the run (instead of epochs)
    label_smoothing: float = setting(0.0, ge=0, lt=1)
    lookahead: bool = False  # wrap SGD in timm's Lookahead: every k steps the slow weights move alpha of the way
    lookahead_k: int = setting(6, ge=1)
    lookahead_alpha: float = setting(0.5, gt=0, le=1)
    grad_clip: Optional[float] = setting(None, gt=0)
    aux_weight: float = setting(0.0, ge=0)  # weight of auxiliary-head losses, for models with `forward_train`
    # regularisation (augmentation is the data section's)
    drop_rate: float = setting(0.0, ge=0, lt=1)
    drop_path_rate: float = setting(0.0, ge=0, lt=1)
    ema_decay: float = setting(0.0, ge=0, lt=1)  # 0: off; e.g. 0.9998 keeps an EMA of the weights, used for validation
    mixup: float = setting(0.0, ge=0)  # timm Mixup alpha; 0: off
    val_flip: bool = False  # validate on the mean of each image's logits and its mirror image's (flip TTA)
    cutmix: float = setting(0.0, ge=0)  # timm CutMix alpha; 0: off
    # run
    out: Optional[str] = None  # run folder; default runs/<model>-<data>-<time>
    resume: bool = False
    seed: int = setting(0, ge=0, lt=2 ** 32)
    devices: str = "auto"  # a count, "auto", "-1" (every GPU) or GPU indices like "0,1"
    num_nodes: int = setting(1, ge=1)
    accelerator: str = setting("auto", choices=ACCELERATORS)
    precision: str = setting("32-true", choices=PRECISIONS)
    channels_last: bool = False
    deterministic: bool = False
    checkpoint_every: int = setting(0, ge=0)  # also save last.ckpt every N steps (0: at epoch ends only)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
DATA_FIELDS = {f.name: f for f in dataclasses.fields(DataCfg)}
SECTIONS = ("data", "model_kwargs")  # mapping-valued fields: each layer adds keys to the ones below
# every settable name: the top-level fields and the data section's as "data.<field>"
SETTABLE = [*(n for n in FIELDS if n != "data"), *(f"data.{n}" for n in DATA_FIELDS)]


def nest(values: Dict[str, Any], where: str) -> Dict[str, Any]:
    """A layer of values with dotted keys ("data.batch_size") folded into their sections, every name checked."""
    out: Dict[str, Any] = {}
    for key, value in values.items():
        section, dot, name = key.partition(".")
        if dot:
            if section != "data" or name not in DATA_FIELDS:
                raise ValueError(f"{where} names unknown field {key!r}; fields are {', '.join(SETTABLE)}")
            out.setdefault("data", {})[name] = value
        elif key not in FIELDS:
            raise ValueError(f"{where} names unknown field {key!r}; fields are {', '.join(SETTABLE)}")
        elif key == "data" and isinstance(value, dict):
            unknown = sorted(set(value) - set(DATA_FIELDS))
            if unknown:
                raise ValueError(f"{where} names unknown data field(s) {unknown}; data fields are "
                                 f"{', '.join(DATA_FIELDS)}")
            out.setdefault("data", {}).update(value)
        else:
            out[key] = value
    for section in SECTIONS:
        if section in out and not isinstance(out[section], dict):
            raise TypeError(f"TrainConfig.{section}: needs a mapping, got {out[section]!r}")
    return out


def _read_yaml(path: Path, what: str) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ValueError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a mapping of field: value")
    data.pop(PROVENANCE_KEY, None)  # a run folder's record of what made it, not a setting
    return nest(data, f"{what} {path}")


def recipe_values(name: str) -> Dict[str, Any]:
    if name not in RECIPES:
        raise ValueError(f"TrainConfig.recipe: unknown value {name!r}; choose one of {', '.join(RECIPES)}")
    path = resources.files("microdense.train") / "recipes" / f"{name}.yaml"
    return _read_yaml(Path(str(path)), "recipe")


def resolve_config(cli: Dict[str, Any], config_file: Optional[str] = None) -> TrainConfig:
    """Merge defaults < recipe < YAML file < command-line values, then validate.

    `cli` maps field names, or "data.<field>" for the data section, to values (None: not given). The sections
    (`data`, `model_kwargs`) merge key by key across the layers; every other field is replaced whole.

    Raises:
        ValueError, TypeError: one line naming the field, the value and what is allowed.
    """
    from_file = _read_yaml(Path(config_file), "config file") if config_file else {}
    given = nest({k: v for k, v in cli.items() if v is not None}, "the command line")
    recipe = given.get("recipe", from_file.get("recipe", TrainConfig.recipe))
    if not isinstance(recipe, str):
        raise TypeError(f"TrainConfig.recipe: needs a string, got {recipe!r}")
    layers = (recipe_values(recipe), from_file, given)
    values: Dict[str, Any] = {**layers[0], **layers[1], **layers[2], "recipe": recipe}
    for section in SECTIONS:
        values[section] = {k: v for layer in layers for k, v in layer.get(section, {}).items()}
    if "epochs" not in from_file and "epochs" not in given and values["data"].get("name", "synthetic") == "synthetic":
        # NOTE: synthetic data is a demo: it runs a few epochs unless epochs are asked for explicitly.
        values["epochs"] = SYNTHETIC_DEMO_EPOCHS
    cfg = TrainConfig(**{**values, "data": DataCfg(**values["data"])})
    validate_config(cfg)
    return cfg


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
    raise ValueError(f"TrainConfig.devices: {devices!r} is not allowed here; use {allowed}")


def validate_config(cfg: TrainConfig) -> None:
    """Refuse a configuration that cannot run, before any data is read or any folder is made.

    Checks every field's type and range (`setting` rules), then the rules that join fields: a known model and
    genotype, a readable RandAugment spec, Nesterov's momentum, a stopping point, one way to size the warm-up, and
    a precision and device list the chosen accelerator runs.
    """
    check_fields(cfg)
    if cfg.epochs is None and cfg.max_steps == -1 and cfg.time_budget is None:
        raise ValueError("TrainConfig.epochs: nothing says when to stop; set epochs (>= 1), max_steps (>= 1) or "
                         "time_budget (minutes)")
    if cfg.warmup_epochs and cfg.warmup_fraction:
        raise ValueError("TrainConfig.warmup_fraction: warmup_epochs is set too; set one of them to 0")
    if cfg.warmup_epochs and cfg.epochs is None and cfg.max_steps == -1:
        raise ValueError("TrainConfig.warmup_epochs: a run bounded by time_budget alone has no epochs to count; "
                         "set warmup_fraction instead")
    if cfg.nesterov and cfg.momentum == 0:
        raise ValueError("TrainConfig.nesterov: Nesterov momentum needs momentum > 0; set nesterov false or raise "
                         "momentum")
    on_cpu = _accelerator_is_cpu(cfg.accelerator)
    if on_cpu and cfg.precision not in CPU_PRECISIONS:
        raise ValueError(f"TrainConfig.precision: {cfg.precision!r} does not run on a CPU; choose one of "
                         f"{', '.join(CPU_PRECISIONS)}")
    _check_devices(cfg.devices, on_cpu)
    from microdense.models import check_model_name
    check_model_name(cfg.model)
    if cfg.genotype is not None:
        from microdense.nas.genotypes import parse_genotype
        parse_genotype(cfg.genotype)
    if cfg.data.randaugment is not None:
        from timm.data.auto_augment import rand_augment_transform
        try:
            rand_augment_transform(cfg.data.randaugment, {})
        except Exception as e:  # timm asserts and indexes its way through the spec string
            raise ValueError(f"DataCfg.randaugment: {cfg.data.randaugment!r} is not a timm RandAugment spec "
                             f"like 'rand-m9-mstd0.5' ({type(e).__name__}: {e})") from None


def save_config(cfg: TrainConfig, provenance: Optional[Dict[str, Any]] = None) -> str:
    """The run folder's config.yaml: every field, then (when given) the record of the code, machine and data."""
    text = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
    if provenance is not None:
        text += yaml.safe_dump({PROVENANCE_KEY: provenance}, sort_keys=False)
    return text
