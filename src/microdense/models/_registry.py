"""The project's view of timm's registry: which models are ours, creating one by name, and each family's width knob."""
import difflib
from dataclasses import dataclass
from typing import Any, List, Tuple

import timm
import torch.nn as nn
from timm.models import is_model, model_entrypoint

from microdense.errors import ArgumentError, ConfigError, MicrodenseError


def list_models(pattern: str = "") -> List[str]:
    """Names of the models this project registers, optionally filtered by a timm wildcard pattern."""
    names = timm.list_models(pattern or "*")
    return [n for n in names if model_entrypoint(n).__module__.startswith("microdense.")]


def check_model_name(name: str) -> None:
    """Refuse a name timm does not know, suggesting close registered names."""
    if is_model(name):
        return
    close = difflib.get_close_matches(name, list_models(), n=3, cutoff=0.5)
    close = close or difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "run `microdense models` for the list."
    raise ConfigError(f"unknown model {name!r}; {hint}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """`timm.create_model` with a clear error for unknown names and for configs that cannot be built."""
    check_model_name(name)
    try:
        return timm.create_model(name, **kwargs)
    except MicrodenseError as e:  # a configuration the family refused: say which model
        raise type(e)(f"cannot build {name}: {e}") from None
    except TypeError as e:
        # NOTE: Python's own words for a keyword the constructor does not take
        if "unexpected keyword argument" in str(e):
            raise ArgumentError(f"cannot build {name}: {e}") from None
        key = _ill_typed(name, kwargs)
        if key is None:  # not a value the caller gave: a bug
            raise
        raise ArgumentError(f"cannot build {name}: {key}={kwargs[key]!r} is of the wrong type ({e}); give {key} a "
                            "value of the type it takes") from None


def _ill_typed(name: str, kwargs: dict) -> "str | None":
    """The first of `kwargs` that alone makes the build raise a TypeError (built on the meta device, at no cost)."""
    import torch
    for key, value in kwargs.items():
        try:
            with torch.device("meta"):
                timm.create_model(name, **{key: value})
        except TypeError:
            return key
        except Exception:  # NOTE: another of its faults; the type is what is asked
            continue
    return None


@dataclass(frozen=True)
class WidthKnob:
    """A family's one width argument, which `params_like` scales to match parameter counts: each family class
    declares it as its `width_knob` attribute, beside its model configs."""

    name: str  # the keyword argument
    kind: type  # int or float
    low: float  # the range searched
    high: float


def width_knob(name: str) -> WidthKnob:
    """The width knob of the family that registered model `name` (built on the meta device to find it)."""
    import torch
    with torch.device("meta"):
        net = create_model(name)
    knob = getattr(type(net), "width_knob", None)
    if knob is None:
        raise ConfigError(f"params_like: {name} ({type(net).__name__}) has no width knob; its family would declare "
                         "one as its `width_knob`")
    return knob


def resolve_input_size(model: nn.Module) -> Tuple[int, int, int]:
    """(C, H, W) the model is designed for: H, W from its timm pretrained_cfg, C from its first conv."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c, h, w = cfg.get("input_size", (3, 224, 224))
    first_conv = cfg.get("first_conv")
    if first_conv:
        c = getattr(model.get_submodule(first_conv), "in_channels", c)
    return c, h, w
