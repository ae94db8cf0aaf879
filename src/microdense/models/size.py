"""Parameters and MACs of a model, whole and per stage, counted by torch.utils.flop_counter."""
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class StageSize:
    module: str
    width: int
    blocks: int
    reduction: int
    params: int
    macs: int


@dataclass
class ModelSize:
    """What `microdense info` reports. MACs are multiply-accumulates = counted FLOPs / 2."""

    name: str
    params: int
    macs: int
    input_size: Tuple[int, int, int]
    num_classes: int
    stages: List[StageSize] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops_by_module(model: nn.Module, input_size: Tuple[int, int, int]) -> Dict[str, int]:
    """FLOPs of one image's forward pass, keyed by module path relative to `model` ("" = whole model)."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    with FlopCounterMode(display=False, depth=None) as counter:
        model(x)
    model.train(was_training)
    root = type(model).__name__
    out: Dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == root or key.startswith(root + "."):
            out[key[len(root) + 1:]] = sum(ops.values())
    return out


def measure_size(name: str, model: nn.Module, input_size: Tuple[int, int, int]) -> ModelSize:
    """Size of `model`, with one row per entry of its timm `feature_info` (its stages)."""
    flops = count_flops_by_module(model, input_size)
    stages = []
    for info in getattr(model, "feature_info", []):
        module = model.get_submodule(info["module"])
        stages.append(StageSize(
            module=info["module"],
            width=info["num_chs"],
            blocks=len(module) if isinstance(module, nn.Sequential) else 1,
            reduction=info["reduction"],
            params=count_params(module),
            macs=flops.get(info["module"], 0) // 2,
        ))
    return ModelSize(
        name=name,
        params=count_params(model),
        macs=flops.get("", 0) // 2,
        input_size=tuple(input_size),
        num_classes=getattr(model, "num_classes", 0),
        stages=stages,
    )
