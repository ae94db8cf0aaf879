"""Micro-Dense Nets (arXiv:2004.08796) as timm models, with a Lightning trainer and benchmarks.

`import microdense` registers every model with timm: `timm.create_model("microdensenet_cifar_base")`.
"""
from microdense import models, nas  # noqa: F401  (registers the model families and the DARTS networks with timm)
from microdense.layers import MicroDenseBlock, MicroDenseBlockCfg

__version__ = "0.1.0"
__all__ = ["MicroDenseBlock", "MicroDenseBlockCfg", "__version__"]
