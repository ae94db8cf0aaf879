"""Model families; importing this package registers every model with timm."""
from microdense.models.micro_dense_net import MicroDenseNet, MicroDenseNetCfg, MicroDenseStageCfg, model_cfgs

__all__ = ["MicroDenseNet", "MicroDenseNetCfg", "MicroDenseStageCfg", "model_cfgs"]
