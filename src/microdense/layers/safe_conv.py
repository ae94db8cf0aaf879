"""Strided 1x1 convolutions routed around a oneDNN fault, so every model runs on every x86 CPU.

oneDNN 3.12 (torch 2.14) writes past a workspace in the backward pass of a stride-2 1x1 convolution in channels_last
whose input has fewer than 8 channels, on an AVX2 CPU (or under `ONEDNN_MAX_CPU_ISA=AVX2`): its `jit_1x1:avx2`
backward-weights kernel copies the strided input into a reduce-to-unit-stride buffer sized for the input's channels
but indexed in blocks of 8 (uxlfoundation/oneDNN#6035, open). At one thread the process dies (`free(): invalid next
size`, a segmentation fault); the issue reports hangs and wrong gradients at more. Such a convolution appears wherever
a user picks a width that is not a multiple of 8 (a projection shortcut into a stage, DARTS's FactorizedReduce).

A 1x1 convolution without padding at stride s is the same function as subsampling its input by s and convolving at
stride 1, which needs no such buffer: `SubsampledConv2d` does exactly that, with the parameters and
state-dict keys of the `nn.Conv2d` it replaces. `route_strided_pointwise` swaps it in for every strided 1x1
convolution whose input channels are not a multiple of 8 (a margin around the 2-7 measured to fail); the project's own
widths are multiples of 8, so its registered models keep oneDNN's strided kernels. A test runs the faulty case in a
subprocess, so the suite shows when a torch upgrade has fixed it.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CHANNEL_MULTIPLE", "SubsampledConv2d", "needs_subsampling", "route_strided_pointwise"]

# NOTE: channel counts that are multiples of 8 keep oneDNN and cuDNN on their vectorised paths and off the fault
# above; every registered width is one (models scale widths to it), and a conv whose input is not is routed here.
CHANNEL_MULTIPLE = 8


class SubsampledConv2d(nn.Conv2d):
    """A strided 1x1 convolution computed as subsample-then-convolve at stride 1 (equal outputs and gradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride[0], ::self.stride[1]]
        return F.conv2d(x, self.weight, self.bias, 1, 0, self.dilation, self.groups)


def needs_subsampling(conv: nn.Module) -> bool:
    """Whether `conv` is a strided, unpadded 1x1 convolution whose input width oneDNN's strided kernel mishandles."""
    return (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride != (1, 1)
            and conv.padding == (0, 0) and conv.padding_mode == "zeros"
            and conv.in_channels % CHANNEL_MULTIPLE != 0)


def route_strided_pointwise(model: nn.Module) -> int:
    """Replace, in place, every convolution of `model` that `needs_subsampling` by a `SubsampledConv2d` sharing its
    parameters; returns how many were replaced. Families call it at the end of their constructors."""
    targets = [(name, m) for name, m in model.named_modules() if needs_subsampling(m)]
    for name, conv in targets:
        safe = SubsampledConv2d(conv.in_channels, conv.out_channels, 1, conv.stride, 0, conv.dilation, conv.groups,
                                bias=conv.bias is not None, device="meta")
        safe.weight, safe.bias = conv.weight, conv.bias
        model.set_submodule(name, safe)
    return len(targets)
