"""The model section of a training configuration, and the one place a configured model is built."""
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch
import torch.nn as nn

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

    def __post_init__(self) -> None:
        check_fields(self)
        if "num_classes" in self.kwargs:
            raise ValueError("ModelCfg.kwargs: num_classes is a field of its own; set model.num_classes")
        with torch.device("meta"):  # every argument checked by the model itself, at no cost in memory or time
            build_model(self, self.num_classes or 10)


def model_args(cfg: ModelCfg, num_classes: int) -> Dict[str, Any]:
    """The keyword arguments the network is built with (a run records them to rebuild it): every field that is set."""
    set_fields = {k: getattr(cfg, k) for k in ("drop_rate", "drop_path_rate") if getattr(cfg, k) is not None}
    return dict(num_classes=num_classes, **set_fields, **cfg.kwargs)


def build_model(cfg: ModelCfg, num_classes: int) -> nn.Module:
    """The network `cfg` describes, with `num_classes` outputs."""
    return create_model(cfg.name, **model_args(cfg, num_classes))
