"""Reusable blocks; they know nothing of whole networks."""
from microdense.layers.micro_dense import BlockChannels, MicroDenseBlock, MicroDenseBlockCfg, block_channels
from microdense.layers.recompute import checkpoint_blocks, checkpoint_call
from microdense.layers.safe_conv import CHANNEL_MULTIPLE, SubsampledConv2d, route_strided_pointwise

__all__ = ["CHANNEL_MULTIPLE", "BlockChannels", "MicroDenseBlock", "MicroDenseBlockCfg", "SubsampledConv2d",
           "block_channels", "checkpoint_blocks", "checkpoint_call", "route_strided_pointwise"]
