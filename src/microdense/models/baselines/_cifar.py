"""What every CIFAR baseline shares: its timm pretrained_cfg and the stem-stride bookkeeping."""
from typing import Any, Dict, List

from microdense.models.micro_dense_net import CIFAR10_MEAN, CIFAR10_STD


def cifar_cfg(first_conv: str, classifier: str, pool_size: int = 8, **kwargs: Any) -> Dict[str, Any]:
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
