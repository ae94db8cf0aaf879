"""Eval-mode simplification: fold every BatchNorm that directly follows a conv into that conv.

A BN can be folded only where it reads a conv's output and nothing else reads that output: post-activation units
(conv-BN-ReLU), projection shortcuts, the baselines' blocks, and in a pre-activation Micro-Dense block the BN before
each grouped 3x3 (it reads that layer's 1x1 bottleneck alone: 9 of tiny's 12 folds). The BNs that normalise a block
input or a concatenation read what several layers read, so they stay; `FoldReport` counts both.
"""
import copy
from dataclasses import dataclass

import torch.fx as fx
import torch.nn as nn
from timm.layers import BatchNormAct2d
from torch.nn.utils.fusion import fuse_conv_bn_eval


@dataclass(frozen=True)
class FoldReport:
    folded: int  # BN layers merged into the conv before them
    kept: int  # BN layers left as they are (no conv directly before them, or its output is read elsewhere)
    traced: bool  # False: the model could not be traced by torch.fx, so nothing was folded

    def describe(self) -> str:
        if not self.traced:
            return f"BN folding skipped (the model is not FX-traceable); {self.kept} BN layers kept"
        return (f"folded {self.folded} BN layers into the convs before them; {self.kept} kept (they read no conv "
                "output of their own: pre-activation BN-ReLU-conv, or a tensor other layers read too)")


class _BatchNormLeafTracer(fx.Tracer):
    """Keeps every BatchNorm (timm's BatchNormAct2d included) and every conv (our `SubsampledConv2d` included) a module
    call, so each can be matched and replaced."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (nn.BatchNorm2d, nn.Conv2d)) or super().is_leaf_module(m, qualname)


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def fold_batchnorm(model: nn.Module) -> "tuple[nn.Module, FoldReport]":
    """An eval-mode copy of `model` with conv -> BN pairs folded (`torch.nn.utils.fusion`); `model` is untouched."""
    model = copy.deepcopy(model).eval()
    try:
        graph = _BatchNormLeafTracer().trace(model)
    except Exception:  # data-dependent control flow: serve the model unfolded
        return model, FoldReport(folded=0, kept=_count_bn(model), traced=False)
    folded_model = fx.GraphModule(model, graph)
    modules = dict(folded_model.named_modules())
    folded = 0
    for node in folded_model.graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.BatchNorm2d):
            continue
        conv_node = node.args[0]
        if not (isinstance(conv_node, fx.Node) and conv_node.op == "call_module" and len(conv_node.users) == 1
                and isinstance(modules[conv_node.target], nn.Conv2d)):
            continue
        bn = modules[node.target]
        # NOTE: the folded weights are computed in float64 and rounded once, so folding adds no rounding of its own.
        conv = copy.deepcopy(modules[conv_node.target])
        dtype = conv.weight.dtype
        fused = fuse_conv_bn_eval(conv.double(), copy.deepcopy(bn).double()).to(dtype)
        folded_model.set_submodule(conv_node.target, fused)
        # NOTE: timm's BatchNormAct2d carries its activation (and dropout); those stay after the folded conv.
        rest = nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()
        folded_model.set_submodule(node.target, rest)
        folded += 1
    folded_model.recompile()
    return folded_model, FoldReport(folded=folded, kept=_count_bn(folded_model), traced=True)
