"""Reusable blocks; they know nothing of whole networks."""
from microdense.layers.micro_dense import (
    BlockChannels, MicroDenseBlock, MicroDenseBlockCfg, block_channels, checkpoint_blocks, checkpoint_call)
from microdense.layers.safe_conv import SubsampledConv2d, route_strided_pointwise

__all__ = ["BlockChannels", "MicroDenseBlock", "MicroDenseBlockCfg", "SubsampledConv2d", "block_channels",
           "checkpoint_blocks", "checkpoint_call", "route_strided_pointwise"]
