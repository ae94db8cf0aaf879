"""The training configuration: one dataclass, filled from defaults < recipe < --config YAML < flags.

Every field is settable from a YAML file and from the command line; the resolved configuration is
saved in the run folder so a run can be repeated exactly.
"""
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from microdense.errors import UserError

RECIPES = ("paper", "fast", "imagenet", "darts")
SCHEDULES = ("step", "cosine", "onecycle")
SYNTHETIC_DEMO_EPOCHS = 3


@dataclass
class TrainConfig:
    # what to train on what
    model: str = "microdensenet_cifar_tiny"
    model_kwargs: Dict[str, Any] = field(default_factory=dict)  # extra timm.create_model kwargs (block fields...)
    genotype: Optional[str] = None  # DARTS-space models: a name, JSON file/text or Genotype(...) string
    num_classes: Optional[int] = None  # None: from the data
    data: str = "synthetic"
    data_dir: Optional[str] = None
    download: bool = False
    val_split: Optional[float] = None  # None: the dataset's own val split, else 10% held out
    # schedule (the recipe fills these)
    recipe: str = "fast"
    epochs: Optional[int] = None
    max_steps: int = -1  # stop after this many optimizer steps (-1: the epochs decide)
    batch_size: int = 128  # per device
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # step | cosine | onecycle
    milestones: List[float] = field(default_factory=lambda: [0.5, 0.75])  # step schedule, fractions of epochs
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: Optional[float] = None
    aux_weight: float = 0.0  # weight of auxiliary-head losses, for models with `forward_train`
    # regularisation and augmentation
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    ema_decay: float = 0.0  # 0: off; e.g. 0.9998 keeps an EMA of the weights, used for validation
    mixup: float = 0.0  # timm Mixup alpha; 0: off
    cutmix: float = 0.0  # timm CutMix alpha; 0: off
    randaugment: Optional[str] = None  # timm spec, e.g. "rand-m9-mstd0.5"
    crop_padding: int = 4
    flip: bool = True
    cutout: int = 0
    img_size: int = 224
    crop_pct: float = 0.875
    # run
    out: Optional[str] = None  # run folder; default runs/<model>-<data>-<time>
    resume: bool = False
    seed: int = 0
    devices: str = "auto"
    num_nodes: int = 1
    accelerator: str = "auto"
    precision: str = "32-true"
    workers: int = 4
    channels_last: bool = False
    deterministic: bool = False
    checkpoint_every: int = 0  # also save last.ckpt every N steps (0: at epoch ends only)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _read_yaml(path: Path, what: str) -> Dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as e:
        raise UserError(f"{what} {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of field: value")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise UserError(f"{what} {path} has unknown field(s) {unknown}; see `microdense train --help`")
    return data


def recipe_values(name: str) -> Dict[str, Any]:
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}", exit_code=2)
    path = resources.files("microdense.train") / "recipes" / f"{name}.yaml"
    return _read_yaml(Path(str(path)), "recipe")


def resolve_config(cli: Dict[str, Any], config_file: Optional[str] = None) -> TrainConfig:
    """Merge defaults < recipe < YAML file < command-line values (None in `cli` means "not given")."""
    from_file = _read_yaml(Path(config_file), "config file") if config_file else {}
    given = {k: v for k, v in cli.items() if v is not None and k in FIELDS}
    recipe = given.get("recipe", from_file.get("recipe", TrainConfig.recipe))
    values: Dict[str, Any] = {**recipe_values(recipe), **from_file, **given, "recipe": recipe}
    if "epochs" not in from_file and "epochs" not in given and values.get("data", TrainConfig.data) == "synthetic":
        # NOTE: synthetic data is a demo: it runs a few epochs unless epochs are asked for explicitly.
        values["epochs"] = SYNTHETIC_DEMO_EPOCHS
    try:
        cfg = TrainConfig(**values)
    except TypeError as e:
        raise UserError(f"bad configuration: {e}") from None
    if cfg.schedule not in SCHEDULES:
        raise UserError(f"unknown schedule {cfg.schedule!r}; choose one of {', '.join(SCHEDULES)}", exit_code=2)
    return cfg


def save_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False)
