"""Pre-activation CIFAR ResNets on timm's ResNetV2: Pre-act ResNet-164 and WRN-28-10.

He et al., "Identity Mappings in Deep Residual Networks" (Pre-act ResNet-164: 3 stages of 18
bottlenecks, 64/128/256 out, 1.7M); Zagoruyko & Komodakis, "Wide Residual Networks" (WRN-28-10:
3 stages of 4 pre-act basic blocks, 160/320/640 channels, 36.5M). Plain convs and BatchNorm, a
3x3 stride-1 stem, no max-pool.
"""
from functools import partial
from typing import Any

import torch.nn as nn
from timm.layers import BatchNormAct2d, create_conv2d
from timm.models import register_model
from timm.models.resnetv2 import ResNetV2

from microdense.layers import route_strided_pointwise
from microdense.models._common import cifar_cfg, rescale_feature_info
from microdense.models._pretrained import build_model_with_release, generate_release_cfgs

_conv = partial(create_conv2d, bias=False)


class CifarPreActResNet(ResNetV2):
    """timm's ResNetV2 (pre-activation) with BatchNorm, plain convs and a 3x3 stride-1 stem."""

    def __init__(self, *args: Any, in_chans: int = 3, stem_chs: int = 16, **kwargs: Any):
        kwargs.setdefault("norm_layer", BatchNormAct2d)
        kwargs.setdefault("conv_layer", _conv)
        super().__init__(*args, in_chans=in_chans, stem_chs=stem_chs, **kwargs)
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_chans, stem_chs, 3, 1, 1, bias=False))
        nn.init.kaiming_normal_(self.stem.conv.weight, mode="fan_out", nonlinearity="relu")
        self.stem_feat_idx = 0
        rescale_feature_info(self.feature_info, "stem.conv", stem_stride=4)
        self.feature_info[0]["reduction"] = 1
        route_strided_pointwise(self)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarPreActResNet:
    return build_model_with_release(CifarPreActResNet, variant, pretrained,
                                    feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)


default_cfgs = generate_release_cfgs({
    "preact_resnet164_cifar.cifar10": cifar_cfg("stem.conv", "head.fc"),
    "wrn28_10_cifar.cifar10": cifar_cfg("stem.conv", "head.fc"),
})


@register_model
def preact_resnet164_cifar(pretrained: bool = False, **kwargs: Any) -> CifarPreActResNet:
    """Pre-act ResNet-164 for CIFAR (1.7M)."""
    model_args = dict(layers=(18, 18, 18), channels=(64, 128, 256), stem_chs=16)
    return _create("preact_resnet164_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def wrn28_10_cifar(pretrained: bool = False, **kwargs: Any) -> CifarPreActResNet:
    """Wide ResNet 28-10 for CIFAR (36.5M)."""
    model_args = dict(layers=(4, 4, 4), channels=(160, 320, 640), stem_chs=16, basic=True, bottle_ratio=1.0)
    return _create("wrn28_10_cifar", pretrained, **dict(model_args, **kwargs))
