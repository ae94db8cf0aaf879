"""CIFAR ResNets (post-activation) built from timm's blocks: ResNet-20/56/110, ResNet-18, ResNeXt-29 (8x64d).

He et al., "Deep Residual Learning for Image Recognition" (ResNet-6n+2: 3 stages of n basic blocks,
16/32/64 channels; ResNet-20 0.27M, ResNet-56 0.85M, ResNet-110 1.7M); Xie et al., "Aggregated Residual
Transformations for Deep Neural Networks"
(ResNeXt-29 8x64d: 3 stages of 3 bottlenecks, cardinality 8, width 64, 34.4M); ResNet-18 with the
usual CIFAR stem (11.2M). The stem is one 3x3 stride-1 conv-BN-ReLU, no max-pool. Shortcuts that
change shape are 1x1 projections (timm's, the paper's "option B"), not its zero-padding "option A": two projections,
+0.003M on every ResNet-6n+2.
"""
from typing import Any, Tuple, Type, Union

import torch.nn as nn
from timm.layers import ClassifierHead, DropPath
from timm.models import register_model
from timm.models.resnet import BasicBlock, Bottleneck, downsample_conv

from microdense.layers import route_strided_pointwise
from microdense.models._common import build_stages, cifar_cfg, init_weights
from microdense.models._pretrained import build_model_with_release, generate_release_cfgs
from microdense.models._staged import StagedNet


class CifarResNet(StagedNet):
    """Stem, stages of timm ResNet blocks (first block of stages 2+ strided), pool, linear.

    Args:
        block: timm's BasicBlock or Bottleneck.
        layers: blocks per stage.
        channels: `planes` of each stage (outputs are planes x block.expansion).
        stem_chs: stem output channels.
        cardinality, base_width: ResNeXt grouping of Bottleneck (width = planes * base_width / 64 * cardinality).
    """

    def __init__(
            self,
            block: Type[Union[BasicBlock, Bottleneck]],
            layers: Tuple[int, ...],
            channels: Tuple[int, ...] = (64, 128, 256, 512),
            stem_chs: int = 64,
            cardinality: int = 1,
            base_width: int = 64,
            num_classes: int = 10,
            in_chans: int = 3,
            global_pool: str = "avg",
            drop_rate: float = 0.0,
            drop_path_rate: float = 0.0,
    ):
        super().__init__()
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_chs, 3, 1, 1, bias=False), nn.BatchNorm2d(stem_chs),
                                  nn.ReLU(inplace=True))

        def make_block(stage_idx: int, in_chs: int, stride: int, drop_path: float) -> Tuple[nn.Module, int]:
            planes = channels[stage_idx]
            out_chs = planes * block.expansion
            down = downsample_conv(in_chs, out_chs, 1, stride=stride) if (stride != 1 or in_chs != out_chs) else None
            return block(in_chs, planes, stride=stride, downsample=down, cardinality=cardinality, base_width=base_width,
                         drop_path=DropPath(drop_path) if drop_path else None), out_chs

        self.stages, self.feature_info, in_chs = build_stages(stem_chs, layers, make_block, drop_path_rate)
        self.final_norm = nn.Identity()
        self.num_features = self.head_hidden_size = in_chs
        self.head = ClassifierHead(in_chs, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        init_weights(self, residual_blocks=(BasicBlock, Bottleneck))
        route_strided_pointwise(self)


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    out_indices = tuple(range(len(kwargs["layers"])))
    return build_model_with_release(CifarResNet, variant, pretrained,
                                    feature_cfg=dict(flatten_sequential=True, out_indices=out_indices), **kwargs)


default_cfgs = generate_release_cfgs({
    "resnet20_cifar.cifar10": cifar_cfg("stem.0", "head.fc"),
    "resnet56_cifar.cifar10": cifar_cfg("stem.0", "head.fc"),
    "resnet110_cifar.cifar10": cifar_cfg("stem.0", "head.fc"),
    "resnet18_cifar.cifar10": cifar_cfg("stem.0", "head.fc", pool_size=4),
    "resnext29_8x64d_cifar.cifar10": cifar_cfg("stem.0", "head.fc"),
})


def _resnet_6n2(variant: str, n: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    model_args = dict(block=BasicBlock, layers=(n, n, n), channels=(16, 32, 64), stem_chs=16)
    return _create(variant, pretrained, **dict(model_args, **kwargs))


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for CIFAR (0.27M): the same-size plain-ResNet peer of microdensenet_cifar_tiny."""
    return _resnet_6n2("resnet20_cifar", 3, pretrained, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for CIFAR (0.85M): the same-size plain-ResNet peer of microdensenet_cifar_small."""
    return _resnet_6n2("resnet56_cifar", 9, pretrained, **kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for CIFAR (1.7M)."""
    return _resnet_6n2("resnet110_cifar", 18, pretrained, **kwargs)


@register_model
def resnet18_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-18 with a 3x3 stride-1 stem and no max-pool (11.2M)."""
    model_args = dict(block=BasicBlock, layers=(2, 2, 2, 2))
    return _create("resnet18_cifar", pretrained, **dict(model_args, **kwargs))


@register_model
def resnext29_8x64d_cifar(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNeXt-29 (8x64d) for CIFAR (34.4M)."""
    model_args = dict(block=Bottleneck, layers=(3, 3, 3), channels=(64, 128, 256), cardinality=8, base_width=64)
    return _create("resnext29_8x64d_cifar", pretrained, **dict(model_args, **kwargs))
