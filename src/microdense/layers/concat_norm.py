"""The features of a dense aggregation: concatenated with gradients a fast kernel can take, and normalised once.

Concatenation (`cat_channels`): autograd hands each input of `torch.cat` a strided view of the output's gradient,
which the convolution and batch-norm kernels that come next read far below their contiguous speed on CPU (the
batch-norm backward of a 48-channel slice of tiny's 112-channel concatenation took 120 ms against 5 ms for the same
tensor contiguous). Here each input gets its gradient as a tensor of its own, in the input's memory format.

Batch statistics, once per feature (`normalize_once`, `scale_shift_act`): in a pre-activation dense aggregation every
consumer of feature h_j (each later layer's bottleneck, the fusion)
batch-normalises a concatenation that holds h_j's channels. In training mode a BN's statistics are per channel and a
concatenation does not change a channel, so every consumer computes the same mean and variance for h_j; only its own
scale and shift differ. So h_j is normalised once (`normalize_once`), and each consumer applies only its own scale,
shift and activation to the normalised features (`scale_shift_act`). The normalisation's backward is linear in its
incoming gradient, so autograd sums the consumers' gradients before the one backward pass through the statistics,
and every consumer's running statistics get the update its own BN would have made: the function is unchanged, the
work is not (Lasagne's fast DenseNet, `papers/densenet/densenet_fast.py` in Lasagne/Recipes, does the same).
"""
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from microdense.layers.fused import memory_format_of, scale_shift_relu, takes

__all__ = ["cat_channels", "count_batch", "normalize_once", "scale_shift_act"]


class _CatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *features: torch.Tensor) -> torch.Tensor:
        ctx.widths = [f.shape[1] for f in features]
        ctx.formats = [memory_format_of(f) for f in features]
        return torch.cat(features, 1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return tuple(g.contiguous(memory_format=fmt)
                     for g, fmt in zip(torch.split(grad, ctx.widths, 1), ctx.formats))


def cat_channels(features: List[torch.Tensor]) -> torch.Tensor:
    """`torch.cat(features, 1)`, each input's gradient a dense tensor in its own memory format (see above)."""
    return _CatChannels.apply(*features) if len(features) > 1 else features[0]


def count_batch(bns: Sequence[nn.modules.batchnorm._BatchNorm]) -> None:
    """What each BN's own training forward does before normalising: count the batch."""
    for bn in bns:
        if bn.track_running_stats and bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)


def _update_factor(bn: nn.modules.batchnorm._BatchNorm) -> float:
    """The weight of this batch in `bn`'s running statistics, as its own forward computes it."""
    return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum


class _Normalize(torch.autograd.Function):
    """(h - mean) / sqrt(var + eps) by the batch's statistics, saving the normalised tensor rather than `h`: the
    block can then free each conv's output once it is normalised. The backward is batch norm's own, with the
    normalised tensor as its input, mean 0, inverse std 1 and the true inverse std as the weight, which is the same
    formula: grad_h = invstd * (g - mean(g) - xhat * mean(g * xhat))."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, eps: float) -> torch.Tensor:
        normed, _, invstd = torch.native_batch_norm(h, None, None, mean, var, True, 1.0, eps)
        ctx.save_for_backward(normed, invstd)
        return normed

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, invstd = ctx.saved_tensors
        grad_h, _, _ = torch.ops.aten.native_batch_norm_backward(
            grad, normed, invstd, None, None, torch.zeros_like(invstd), torch.ones_like(invstd), True, 0.0,
            [True, False, False])
        return grad_h, None, None, None


def normalize_once(h: torch.Tensor, bns: Sequence[nn.modules.batchnorm._BatchNorm], offset: int) -> torch.Tensor:
    """`h` normalised by its batch statistics (no scale or shift), which also update every consumer's running
    statistics at channels `offset:offset + h.shape[1]`, as each consumer's own training forward would.

    Every BN in `bns` must have been counted (`count_batch`) for this batch already, and all share one eps.
    """
    width = h.shape[1]
    # NOTE: momentum 1 makes the kernel write this batch's mean and unbiased variance into the two scratch vectors:
    # the very figures each consumer's own kernel would have folded into its running statistics.
    mean = torch.zeros(width, dtype=bns[0].running_mean.dtype, device=h.device)
    var = torch.ones_like(mean)
    normed = _Normalize.apply(h, mean, var, bns[0].eps)
    with torch.no_grad():
        for bn in bns:
            if not bn.track_running_stats:
                continue
            factor = _update_factor(bn)
            bn.running_mean[offset:offset + width].mul_(1 - factor).add_(mean, alpha=factor)
            bn.running_var[offset:offset + width].mul_(1 - factor).add_(var, alpha=factor)
    return normed


def scale_shift_act(normed: List[torch.Tensor], bn: nn.Module) -> torch.Tensor:
    """One consumer's BN-activation over the concatenation of features already normalised by `normalize_once`:
    its own scale and shift (`bn.weight`, `bn.bias`), then its drop and activation (timm's `BatchNormAct2d`).
    A plain ReLU runs in the fused CPU kernel where it can (`microdense.layers.fused`)."""
    if type(bn.act) is nn.ReLU and isinstance(bn.drop, nn.Identity) and takes(normed, bn.weight):
        return scale_shift_relu(normed, bn.weight, bn.bias)
    x = cat_channels(normed)
    # NOTE: batch_norm in eval form with mean 0, variance 1 and eps 0 is exactly x * weight + bias, in one native pass
    # whose backward gives the input, weight and bias gradients in one more.
    zeros = torch.zeros(x.shape[1], dtype=bn.weight.dtype, device=x.device)
    x = F.batch_norm(x, zeros, torch.ones_like(zeros), bn.weight, bn.bias, False, 0.0, 0.0)
    return bn.act(bn.drop(x))
