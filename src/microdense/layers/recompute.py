"""Recomputing activations in backward without disturbing BatchNorm: what every family's grad checkpointing uses.

timm's `checkpoint_seq` and torchvision's memory-efficient DenseNet run each BN's forward a second time during
backward, which updates its running statistics twice per step; here the recomputation runs with those statistics
frozen, so a checkpointed network ends a step with exactly the buffers of a plain one (tested on outputs, gradients
and buffers).
"""
import contextlib
from typing import Any

import torch
import torch.nn as nn
import torch.utils.checkpoint

__all__ = ["checkpoint_blocks", "checkpoint_call", "frozen_bn_stats"]


@torch.jit.unused
def checkpoint_blocks(blocks: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run `blocks` (a Sequential of Sequentials, or of blocks) recomputing each block in backward.

    Unlike timm's `checkpoint_seq`, the recomputation leaves BN running statistics alone, so a
    checkpointed network ends a step with exactly the buffers of a plain one.
    """
    for stage in blocks:
        for block in (stage if isinstance(stage, nn.Sequential) else [stage]):
            x = checkpoint_call(block, x)
    return x


@torch.jit.unused
def checkpoint_call(module: nn.Module, *args: Any) -> torch.Tensor:
    """`module(*args)`, its activations recomputed in backward instead of stored, BN running statistics untouched
    by the recomputation (and the RNG replayed, so dropout and drop-path draw the same masks)."""
    return torch.utils.checkpoint.checkpoint(
        module, *args, use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), frozen_bn_stats(module)))


@contextlib.contextmanager
def frozen_bn_stats(module: nn.Module):
    """Run BN layers in `module` without touching their running statistics (for recomputation)."""
    saved = [(bn, bn.momentum, bn.num_batches_tracked.clone()) for bn in module.modules()
             if isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.track_running_stats]
    for bn, _, _ in saved:
        bn.momentum = 0.0  # running = 1 * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for bn, momentum, tracked in saved:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
