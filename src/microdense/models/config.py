"""The model section of a training configuration, and the one place a configured model is built."""
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

from microdense.errors import ConfigError
from microdense.fields import check_fields, setting
from microdense.models._registry import create_model

__all__ = ["ModelCfg", "build_model", "model_args"]


@dataclass(frozen=True)
class ModelCfg:
    """Which network, and every argument it is built with: the `model` section of a training configuration.

    A field left None is not passed, so the model keeps its own default; any value set is passed as it is (0.0
    included). Refused at construction, with one line, when the model cannot be built from it.
    """

    name: str = "microdensenet_cifar_tiny"  # a registered model (`microdense models`)
    kwargs: Dict[str, Any] = setting(default_factory=dict)  # family arguments: block fields, a DARTS genotype, ...
    num_classes: Optional[int] = setting(None, ge=2)  # None: the data's class count
    drop_rate: Optional[float] = setting(None, ge=0, lt=1)  # dropout before the classifier
    drop_path_rate: Optional[float] = setting(None, ge=0, lt=1)  # stochastic depth (DARTS: its final drop-path)
    # start from the model's released weights, as timm's pretrained=True (a new classifier if num_classes differs)
    pretrained: bool = False
    # start from these weights: a run folder, model.safetensors, a .ckpt or a released name (model.tag); every tensor
    # is loaded but the classifier when the class count differs
    init_from: Optional[str] = None

    def __post_init__(self) -> None:
        # NOTE: values only: a saved configuration stays readable when a file it names has moved since
        # (`microdense.saved.weights_source.start_source` looks for the weights when a run starts).
        check_fields(self)
        if "num_classes" in self.kwargs:
            raise ConfigError("ModelCfg.kwargs: num_classes is a field of its own; set model.num_classes")
        with torch.device("meta"):  # every argument checked by the model itself, at no cost in memory or time
            build_model(self, self.num_classes or 10, weights=False)
        if self.pretrained and self.init_from is not None:
            raise ConfigError("ModelCfg.init_from: pretrained is set too; start from one of them")


def model_args(cfg: ModelCfg, num_classes: int) -> Dict[str, Any]:
    """The keyword arguments the network is built with (a run records them to rebuild it): every field that is set."""
    set_fields = {k: getattr(cfg, k) for k in ("drop_rate", "drop_path_rate") if getattr(cfg, k) is not None}
    return dict(num_classes=num_classes, **set_fields, **cfg.kwargs)


def build_model(cfg: ModelCfg, num_classes: int, weights: bool = True) -> nn.Module:
    """The network `cfg` describes, with `num_classes` outputs; with the released weights when `cfg.pretrained` (and
    `weights`: False builds the architecture alone). `init_from` is the trainer's to apply
    (`microdense.saved.weights_source.init_from`): its sources are files this project's trainer writes."""
    pretrained = dict(pretrained=True) if cfg.pretrained and weights else {}
    return create_model(cfg.name, **model_args(cfg, num_classes), **pretrained)
