"""Reusable blocks; they know nothing of whole networks."""
from microdense.layers.micro_dense import (
    BlockChannels, MicroDenseBlock, MicroDenseBlockCfg, block_channels, checkpoint_blocks, checkpoint_call)

__all__ = ["BlockChannels", "MicroDenseBlock", "MicroDenseBlockCfg", "block_channels", "checkpoint_blocks",
           "checkpoint_call"]
