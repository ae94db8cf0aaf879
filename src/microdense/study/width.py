"""`params_like`: scale one width knob of a model until its parameter count is within a tolerance of a target.

Each family declares its one width knob (`width_knob`, beside its model configs: `width_multiplier` for Micro-Dense
Nets, `init_channels` for the DARTS hosts, `alpha` for PyramidNet, `growth_rate` for DenseNet), and the parameter
count grows with it: a bisection finds where the count crosses the target, and the closer of the two counts on
either side of the crossing is taken. A float knob (MicroDenseNet's, whose count may dip a little where a rounded
width jumps) also tries the values within 5% around the crossing. Models are built on the meta device (no memory,
no initialisation cost).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

import torch
import torch.nn as nn

from microdense.errors import ConfigError
from microdense.models import create_model, width_knob
from microdense.models.size import count_params

TOLERANCE = 0.03


@dataclass(frozen=True)
class WidthMatch:
    kwargs: Dict[str, Any]  # the entry's kwargs with the knob set
    knob: str
    value: float
    params: int
    target: int


def build_meta(model: str, kwargs: Dict[str, Any]) -> nn.Module:
    with torch.device("meta"):
        return create_model(model, **kwargs)


def param_count(model: str, kwargs: Dict[str, Any]) -> int:
    return count_params(build_meta(model, kwargs))


def _crossing(count: Callable[[Any], int], target: int, kind: type, lo: float, hi: float) -> Tuple[Any, Any]:
    """(below, above): neighbouring knob values with count(below) < target <= count(above), or the search's end
    where the target lies outside the range."""
    if count(lo) >= target:
        return lo, lo
    if count(hi) < target:
        return hi, hi
    if kind is int:
        lo, hi = int(lo), int(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
        return lo, hi
    for _ in range(24):  # 24 halvings of [1/16, 16]: steps of 0.00003%, far below any width's rounding step
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return lo, hi


def match_params(model: str, kwargs: Dict[str, Any], target: int, tolerance: float = TOLERANCE) -> WidthMatch:
    """`kwargs` with `model`'s width knob set so that its parameter count is within `tolerance` of `target`.

    Raises:
        ConfigError: the model has no knob, the entry sets the knob itself, or no knob value comes close enough.
    """
    knob_spec = width_knob(model)
    knob, kind, lo, hi = knob_spec.name, knob_spec.kind, knob_spec.low, knob_spec.high
    if knob in kwargs:
        raise ConfigError(f"params_like: {model} sets {knob} itself, the knob params_like scales; drop one of them")
    cache: Dict[Any, int] = {}

    def count(value: Any) -> int:
        if value not in cache:
            cache[value] = param_count(model, {**kwargs, knob: value})
        return cache[value]

    below, above = _crossing(count, target, kind, lo, hi)
    if kind is float:  # counts may dip where a rounding jumps: look around the crossing too
        for i in range(-20, 21):
            count(min(hi, max(lo, above * 1.0025 ** i)))
        best = min(cache, key=lambda v: abs(cache[v] - target))
    else:
        best = min((below, above), key=lambda v: abs(count(v) - target))
    params = count(best)
    if abs(params - target) > tolerance * target:
        raise ConfigError(f"params_like: {model} {kwargs or ''} cannot come within ±{tolerance:.0%} of {target:,} "
                         f"parameters by {knob}: the nearest are {count(below):,} ({knob}={below:.4g}) and "
                         f"{count(above):,} ({knob}={above:.4g})")
    if kind is float:  # the shortest decimal that builds the same net: a knob people can read and retype
        best = next(v for v in (round(best, n) for n in range(2, 17)) if v > 0 and count(v) == params)
    return WidthMatch(kwargs={**kwargs, knob: best}, knob=knob, value=best, params=params, target=target)
