"""Model families; importing this package registers every model with timm."""
from microdense.models._registry import (
    WidthKnob, check_model_name, create_model, list_models, resolve_input_size, width_knob)
from microdense.models.micro_dense_net import MicroDenseNet, MicroDenseNetCfg, MicroDenseStageCfg, model_cfgs

__all__ = [
    "MicroDenseNet", "MicroDenseNetCfg", "MicroDenseStageCfg", "model_cfgs",
    "WidthKnob", "check_model_name", "create_model", "list_models", "resolve_input_size", "width_knob",
]

from microdense.models import baselines  # noqa: E402,F401  (registers the baselines with timm)
