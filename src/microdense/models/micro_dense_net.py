"""Micro-Dense Nets (CIFAR and ImageNet families) as timm models.

Zhu et al., "When Residual Learning Meets Dense Aggregation: Rethinking the Aggregation of Deep
Neural Networks", arXiv:2004.08796. The layer tables are not public: the widths below are this
project's reconstruction (docs/design.md §1), sized to the targets named there. A variant is a
`MicroDenseNetCfg` in `model_cfgs`; any `MicroDenseBlockCfg` field can be overridden at creation:

    timm.create_model("microdensenet_cifar_base", pyramid="constant", cardinality="fixed")
"""
import math
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import BatchNormAct2d, ClassifierHead, make_divisible
from timm.models import register_model

from microdense.errors import ArgumentError, ConfigError
from microdense.layers import CHANNEL_MULTIPLE, MicroDenseBlock, MicroDenseBlockCfg, route_strided_pointwise
from microdense.models._common import build_stages, cifar_cfg, init_weights
from microdense.models._pretrained import build_model_with_release, generate_release_cfgs
from microdense.models._registry import WidthKnob
from microdense.models._staged import StagedNet

__all__ = ["MicroDenseNet", "MicroDenseNetCfg", "MicroDenseStageCfg", "model_cfgs", "scale_widths"]

STEM_TYPES = ("cifar", "deep", "7x7")


@dataclass(frozen=True)
class MicroDenseStageCfg:
    """One stage: `depth` blocks producing `out_chs` channels; the first block of every stage but
    the first halves the resolution."""

    out_chs: int
    depth: int
    block: MicroDenseBlockCfg


@dataclass(frozen=True)
class MicroDenseNetCfg:
    """A whole network as data.

    Attributes:
        stages: the stages, in order.
        stem_width: channels out of the stem.
        stem_type: "cifar" (Conv3x3, stride 1), "deep" (three Conv3x3, the first stride 2, then a
            3x3/2 max-pool) or "7x7" (Conv7x7/2 then a 3x3/2 max-pool).
    """

    stages: Tuple[MicroDenseStageCfg, ...]
    stem_width: int = 32
    stem_type: str = "cifar"


def _stages(
        widths: Tuple[int, ...],
        depths: Tuple[int, ...],
        base_widths: Tuple[int, ...],
        **block_kwargs: Any,
) -> Tuple[MicroDenseStageCfg, ...]:
    return tuple(
        MicroDenseStageCfg(c, n, MicroDenseBlockCfg(base_width=w, **block_kwargs))
        for c, n, w in zip(widths, depths, base_widths)
    )


# NOTE: widths are the project's reconstruction, sized so each variant meets its docs/design.md target
# (tested in tests/models/test_sizes.py): parameters for CIFAR at 10 classes, MACs for ImageNet.
model_cfgs: Dict[str, MicroDenseNetCfg] = dict(
    microdensenet_cifar_tiny=MicroDenseNetCfg(
        stages=_stages((48, 96, 192), (1, 1, 1), (16, 24, 48), group_width=8), stem_width=16),
    microdensenet_cifar_small=MicroDenseNetCfg(
        stages=_stages((64, 128, 256), (3, 3, 3), (16, 32, 64), group_width=8), stem_width=32),
    microdensenet_cifar_base=MicroDenseNetCfg(
        stages=_stages((128, 256, 512), (4, 4, 3), (32, 64, 120), group_width=8), stem_width=32),
    microdensenet_cifar_large=MicroDenseNetCfg(
        stages=_stages((192, 384, 768), (4, 4, 4), (48, 96, 192), group_width=8), stem_width=48),
    microdensenet_imagenet_small=MicroDenseNetCfg(
        stages=_stages((96, 192, 384, 768), (2, 2, 2, 2), (32, 48, 96, 192), group_width=8),
        stem_width=64, stem_type="deep"),
    microdensenet_imagenet_base=MicroDenseNetCfg(
        stages=_stages((192, 384, 768, 1536), (3, 4, 6, 3), (24, 48, 96, 192), group_width=8),
        stem_width=64, stem_type="deep"),
)


def scale_widths(cfg: MicroDenseNetCfg, multiplier: float) -> MicroDenseNetCfg:
    """`cfg` with every width times `multiplier`: the family's one width knob, which matches parameter counts.

    Every channel count stays a multiple of `CHANNEL_MULTIPLE` (timm's `make_divisible`), so the scaled net runs on
    the same fast kernels as the registered ones. A block's base width rounds to a multiple of both that and its group
    width (at least one), so every pyramid width, concatenation and group count obeys the block's rules; its stage's
    width absorbs that rounding (times base width wanted / base width built), so the parameter count moves in small
    steps as the multiplier grows instead of jumping at every rounding of a narrow base width.
    """
    if not multiplier > 0:
        raise ConfigError(f"MicroDenseNet.width_multiplier: must be > 0, got {multiplier}")

    def stage(s: MicroDenseStageCfg) -> MicroDenseStageCfg:
        step = math.lcm(CHANNEL_MULTIPLE, s.block.group_width if s.block.cardinality != "none" else 1)
        wanted = s.block.base_width * multiplier
        base = step * max(1, round(wanted / step))
        return replace(s, out_chs=make_divisible(s.out_chs * multiplier * wanted / base, CHANNEL_MULTIPLE),
                       block=replace(s.block, base_width=base))

    return replace(cfg, stages=tuple(stage(s) for s in cfg.stages),
                   stem_width=make_divisible(cfg.stem_width * multiplier, CHANNEL_MULTIPLE))


def _conv_bn_act(in_chs: int, out_chs: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
        BatchNormAct2d(out_chs),
    )


def create_stem(in_chans: int, out_chs: int, stem_type: str) -> Tuple[nn.Module, int]:
    """Build the stem; returns it with its total stride."""
    if stem_type == "cifar":
        # NOTE: no BN-ReLU: every pre-activation block starts with its own.
        return nn.Sequential(nn.Conv2d(in_chans, out_chs, 3, 1, 1, bias=False)), 1
    if stem_type == "deep":
        mid = out_chs // 2
        return nn.Sequential(
            _conv_bn_act(in_chans, mid, 3, 2),
            _conv_bn_act(mid, mid, 3),
            _conv_bn_act(mid, out_chs, 3),
            nn.MaxPool2d(3, 2, 1),
        ), 4
    if stem_type == "7x7":
        return nn.Sequential(_conv_bn_act(in_chans, out_chs, 7, 2), nn.MaxPool2d(3, 2, 1)), 4
    raise ConfigError(f"MicroDenseNetCfg.stem_type: unknown value {stem_type!r}; choose one of {STEM_TYPES}")


class MicroDenseNet(StagedNet):
    """Stem, stages of Micro-Dense blocks, (BN-ReLU), global pool and a linear classifier.

    Its width knob (`params_like`) is `width_multiplier`: every width, base widths kept multiples of d and 8.

    Args:
        cfg: the architecture.
        num_classes: classifier outputs; 0 for a pooled-feature model.
        in_chans: input image channels.
        global_pool: timm pool type ('avg', 'max', ... or '' for none).
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, rising linearly to this rate over the blocks.
        memory_efficient: recompute every concat-BN-ReLU-1x1 in backward, each layer's bottleneck and the fusion's
            (less memory, more time).
        share_batch_stats: compute each feature's batch statistics once for all its pre-activation consumers
            (the same function, less work; False is the reference path the tests compare it with).
        width_multiplier: scale every width (`scale_widths`), after the block overrides; None keeps `cfg`'s.
        **block_overrides: `MicroDenseBlockCfg` fields applied to every stage, e.g. `pyramid="constant"`.
    """

    width_knob = WidthKnob("width_multiplier", float, 1 / 16, 16.0)

    def __init__(
            self,
            cfg: MicroDenseNetCfg,
            num_classes: int = 1000,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
            memory_efficient: bool = False,
            share_batch_stats: bool = True,
            width_multiplier: Optional[float] = None,
            **block_overrides: Any,
    ):
        super().__init__()
        known = {f.name for f in fields(MicroDenseBlockCfg)}
        unknown = sorted(set(block_overrides) - known)
        if unknown:
            raise ArgumentError(f"MicroDenseNet got unknown arguments {unknown}; block fields are {sorted(known)}")
        if block_overrides:
            cfg = replace(cfg, stages=tuple(replace(s, block=replace(s.block, **block_overrides)) for s in cfg.stages))
        if width_multiplier is not None:
            cfg = scale_widths(cfg, width_multiplier)
        self.cfg = cfg
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.grad_checkpointing = False
        self.memory_efficient = memory_efficient  # what set_grad_checkpointing(False) returns the blocks to

        self.stem, reduction = create_stem(in_chans, cfg.stem_width, cfg.stem_type)

        def make_block(stage_idx: int, in_chs: int, stride: int, drop_path: float) -> Tuple[nn.Module, int]:
            stage = cfg.stages[stage_idx]
            block = MicroDenseBlock(in_chs, stage.out_chs, stage.block, stride=stride, drop_path=drop_path,
                                    memory_efficient=memory_efficient, share_batch_stats=share_batch_stats)
            return block, stage.out_chs

        self.stages, self.feature_info, in_chs = build_stages(
            cfg.stem_width, [s.depth for s in cfg.stages], make_block, drop_path_rate, stem_reduction=reduction)
        self.num_features = self.head_hidden_size = in_chs
        # NOTE: a pre-activation block leaves its output un-normalised, so after a last stage of them the network adds
        # the last BN-ReLU; a post-activation block ends in its own ReLU.
        self.final_norm = BatchNormAct2d(in_chs) if cfg.stages[-1].block.preact else nn.Identity()
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        init_weights(self, residual_blocks=(MicroDenseBlock,), zero_linear_bias=True)
        route_strided_pointwise(self)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward: per block, and inside each block per layer bottleneck. Turning it off
        leaves the bottlenecks as the constructor's `memory_efficient` set them."""
        super().set_grad_checkpointing(enable)
        for m in self.modules():
            if isinstance(m, MicroDenseBlock):
                m.set_memory_efficient(enable or self.memory_efficient)


def _create_microdensenet(variant: str, pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    cfg = kwargs.pop("cfg", None) or model_cfgs[variant]
    out_indices = tuple(range(len(cfg.stages)))
    return build_model_with_release(
        MicroDenseNet, variant, pretrained,
        model_cfg=cfg,
        feature_cfg=dict(flatten_sequential=True, out_indices=out_indices),
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "url": "", "num_classes": 1000, "input_size": (3, 224, 224), "pool_size": (7, 7),
        "crop_pct": 0.875, "interpolation": "bilinear",
        "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD,
        "first_conv": "stem.0.0", "classifier": "head.fc", "license": "apache-2.0",
        "paper_ids": "arXiv:2004.08796",
        **kwargs,
    }


def _cifar_cfg(**kwargs: Any) -> Dict[str, Any]:
    return _cfg(**cifar_cfg("stem.0", "head.fc", **kwargs))


default_cfgs = generate_release_cfgs({
    "microdensenet_cifar_tiny.cifar10": _cifar_cfg(),
    "microdensenet_cifar_small.cifar10": _cifar_cfg(),
    "microdensenet_cifar_base.cifar10": _cifar_cfg(),
    "microdensenet_cifar_large.cifar10": _cifar_cfg(),
    "microdensenet_imagenet_small": _cfg(),
    "microdensenet_imagenet_base": _cfg(),
})


@register_model
def microdensenet_cifar_tiny(pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    """Micro-Dense Net for CIFAR, about 0.25M parameters: CPU demos and tests."""
    return _create_microdensenet("microdensenet_cifar_tiny", pretrained, **kwargs)


@register_model
def microdensenet_cifar_small(pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    """Micro-Dense Net for CIFAR, about 1M parameters: CPU-scale experiments."""
    return _create_microdensenet("microdensenet_cifar_small", pretrained, **kwargs)


@register_model
def microdensenet_cifar_base(pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    """Micro-Dense Net for CIFAR, 4.0M parameters: the paper's headline size."""
    return _create_microdensenet("microdensenet_cifar_base", pretrained, **kwargs)


@register_model
def microdensenet_cifar_large(pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    """Micro-Dense Net for CIFAR, about 12M parameters: the top of the scaling curve."""
    return _create_microdensenet("microdensenet_cifar_large", pretrained, **kwargs)


@register_model
def microdensenet_imagenet_small(pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    """Micro-Dense Net for ImageNet within ResNet-18's 1.8 GMACs."""
    return _create_microdensenet("microdensenet_imagenet_small", pretrained, **kwargs)


@register_model
def microdensenet_imagenet_base(pretrained: bool = False, **kwargs: Any) -> MicroDenseNet:
    """Micro-Dense Net for ImageNet within ResNet-50's 4.1 GMACs."""
    return _create_microdensenet("microdensenet_imagenet_base", pretrained, **kwargs)
