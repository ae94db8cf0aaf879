"""DenseNet-BC for CIFAR on timm's DenseNet: L=100 k=12 (0.8M) and L=190 k=40 (25.6M).

Huang et al., "Densely Connected Convolutional Networks". Three dense blocks of (L - 4) / 6
bottleneck layers, compression 0.5 at each transition, 2k stem channels; the CIFAR stem is one 3x3
stride-1 conv, no BN-ReLU or max-pool (every dense layer begins with its own BN-ReLU).
"""
from typing import Any

import torch.nn as nn
from timm.models import register_model
from timm.models.densenet import DenseNet

from microdense.layers import route_strided_pointwise
from microdense.models._registry import WidthKnob
from microdense.models._common import cifar_cfg, rescale_feature_info
from microdense.models._pretrained import build_model_with_release, generate_release_cfgs


class CifarDenseNet(DenseNet):
    """timm's DenseNet with a 3x3 stride-1 stem; its width knob (`params_like`) is the growth rate k."""

    width_knob = WidthKnob("growth_rate", int, 1, 512)

    def __init__(self, *args: Any, in_chans: int = 3, growth_rate: int = 12, **kwargs: Any):
        super().__init__(*args, in_chans=in_chans, growth_rate=growth_rate, **kwargs)
        self.features.conv0 = nn.Conv2d(in_chans, 2 * growth_rate, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.features.conv0.weight)
        self.features.norm0 = nn.Identity()
        self.features.pool0 = nn.Identity()
        rescale_feature_info(self.feature_info, "features.conv0", stem_stride=4)
        self.feature_info[0]["reduction"] = 1
        route_strided_pointwise(self)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarDenseNet:
    return build_model_with_release(CifarDenseNet, variant, pretrained,
                                    feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **kwargs)


default_cfgs = generate_release_cfgs({
    "densenet_bc100_k12_cifar.cifar10": cifar_cfg("features.conv0", "classifier"),
    "densenet_bc190_k40_cifar.cifar10": cifar_cfg("features.conv0", "classifier"),
})


@register_model
def densenet_bc100_k12_cifar(pretrained: bool = False, **kwargs: Any) -> CifarDenseNet:
    """DenseNet-BC L=100, k=12 (0.8M)."""
    model_args = dict(growth_rate=12, block_config=(16, 16, 16), bn_size=4)
    return _create("densenet_bc100_k12_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def densenet_bc190_k40_cifar(pretrained: bool = False, **kwargs: Any) -> CifarDenseNet:
    """DenseNet-BC L=190, k=40 (25.6M)."""
    model_args = dict(growth_rate=40, block_config=(31, 31, 31), bn_size=4)
    return _create("densenet_bc190_k40_cifar", pretrained, **dict(model_args, **kwargs))
