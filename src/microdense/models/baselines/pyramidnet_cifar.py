"""PyramidNet for CIFAR: PyramidNet-110 with alpha = 48 (1.7M).

Han et al., "Deep Pyramidal Residual Networks". Widths grow additively by alpha / N at every block
(N = total blocks) instead of doubling at each stage; blocks are BN-Conv-BN-ReLU-Conv-BN with no
ReLU after the sum; shortcuts are identity, zero-padded in channels (avg-pooled when strided), so
widening adds no parameters.
"""
from typing import Any, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, ClassifierHead, DropPath
from timm.models import register_model

from microdense.errors import ConfigError
from microdense.layers import route_strided_pointwise
from microdense.models._registry import WidthKnob
from microdense.models._common import build_stages, cifar_cfg, init_weights
from microdense.models._pretrained import build_model_with_release, generate_release_cfgs
from microdense.models._staged import StagedNet


class PyramidBlock(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, drop_path: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False)
        self.bn2 = BatchNormAct2d(out_chs)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.pool = nn.AvgPool2d(2) if stride == 2 else nn.Identity()
        self.extra_chs = out_chs - in_chs
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.bn2(self.conv1(self.bn1(x)))))
        shortcut = self.pool(x)
        if self.extra_chs > 0:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_chs))
        return self.drop_path(out) + shortcut


class PyramidNet(StagedNet):
    """Args: depth (6n + 2 with basic blocks), alpha (total widening, its width knob for `params_like`), and timm's
    standard kwargs."""

    width_knob = WidthKnob("alpha", int, 1, 4096)

    def __init__(self, depth: int = 110, alpha: int = 48, stem_chs: int = 16, num_classes: int = 10,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"PyramidNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_chs, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_chs))
        width = float(stem_chs)

        def make_block(stage_idx: int, in_chs: int, stride: int, drop_path: float) -> Tuple[nn.Module, int]:
            nonlocal width
            width += alpha / (3 * n)
            out_chs = int(width)  # the reference floors the running width
            return PyramidBlock(in_chs, out_chs, stride, drop_path), out_chs

        self.stages, self.feature_info, in_chs = build_stages(stem_chs, (n, n, n), make_block, drop_path_rate)
        self.final_norm = BatchNormAct2d(in_chs)
        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        init_weights(self, residual_blocks=(PyramidBlock,))
        route_strided_pointwise(self)


default_cfgs = generate_release_cfgs({"pyramidnet110_a48_cifar.cifar10": cifar_cfg("stem.0", "head.fc")})


@register_model
def pyramidnet110_a48_cifar(pretrained: bool = False, **kwargs: Any) -> PyramidNet:
    """PyramidNet-110, alpha 48 (1.7M)."""
    return build_model_with_release(PyramidNet, "pyramidnet110_a48_cifar", pretrained,
                                    feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2)),
                                    **dict(dict(depth=110, alpha=48), **kwargs))
