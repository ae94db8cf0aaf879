"""What every model family here shares, written once: the CIFAR data constants and timm cfg, the stage loop,
stochastic-depth rates and weight initialisation. Families (MicroDenseNet, the baselines, the DARTS network) call
these; nothing here knows a family.
"""
from typing import Any, Callable, Dict, List, Sequence, Tuple

import torch.nn as nn

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# make_block(stage index, input channels, stride, drop-path rate) -> (block, its output channels)
BlockFactory = Callable[[int, int, int, float], Tuple[nn.Module, int]]


def cifar_cfg(first_conv: str, classifier: str, pool_size: int = 8, **kwargs: Any) -> Dict[str, Any]:
    """timm pretrained_cfg of a 32x32, 10-class CIFAR model."""
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (pool_size, pool_size),
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": CIFAR10_MEAN, "std": CIFAR10_STD,
        "first_conv": first_conv, "classifier": classifier, "license": "apache-2.0", **kwargs,
    }


def rescale_feature_info(feature_info: List[Dict[str, Any]], stem_module: str, stem_stride: int) -> None:
    """An ImageNet network given a stride-1 CIFAR stem: its taps all come `stem_stride` times sooner."""
    for info in feature_info:
        info["reduction"] = max(1, info["reduction"] // stem_stride)
    feature_info[0]["module"] = stem_module


def drop_path_rates(total_blocks: int, rate: float) -> List[float]:
    """Stochastic depth rising linearly over the blocks, from 0 at the first to `rate` at the last."""
    if total_blocks <= 1:
        return [rate] * total_blocks
    return [rate * i / (total_blocks - 1) for i in range(total_blocks)]


def build_stages(in_chs: int, depths: Sequence[int], make_block: BlockFactory, drop_path_rate: float = 0.0,
                 stem_reduction: int = 1) -> Tuple[nn.Sequential, List[Dict[str, Any]], int]:
    """Stages of blocks, the first block of every stage but the first halving the resolution.

    Returns:
        The stages (an nn.Sequential of nn.Sequentials, named `stages` in the network), timm's `feature_info`
        (one entry per stage) and the channels out of the last stage.
    """
    rates = drop_path_rates(sum(depths), drop_path_rate)
    stages: List[nn.Module] = []
    feature_info: List[Dict[str, Any]] = []
    reduction, idx = stem_reduction, 0
    for stage_idx, depth in enumerate(depths):
        stride = 1 if stage_idx == 0 else 2
        reduction *= stride
        blocks = []
        for i in range(depth):
            block, in_chs = make_block(stage_idx, in_chs, stride if i == 0 else 1, rates[idx])
            blocks.append(block)
            idx += 1
        stages.append(nn.Sequential(*blocks))
        feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"stages.{stage_idx}"))
    return nn.Sequential(*stages), feature_info, in_chs


def init_weights(model: nn.Module, residual_blocks: Tuple[type, ...] = (), zero_linear_bias: bool = False) -> None:
    """He (fan-out) init for every conv; then every block of the `residual_blocks` types starts as its shortcut
    (`zero_init_last()`, unless the block's own `zero_init_residual` is False)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear) and zero_linear_bias and m.bias is not None:
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, residual_blocks) and getattr(m, "zero_init_residual", True):
            m.zero_init_last()
