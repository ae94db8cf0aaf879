"""The Micro-Dense block: global residual learning around a local micro-dense aggregation.

Zhu et al., "When Residual Learning Meets Dense Aggregation: Rethinking the Aggregation of Deep
Neural Networks", arXiv:2004.08796. Only the abstract is public to this project; every choice it
does not fix is a field of `MicroDenseBlockCfg` (see docs/design.md §1 for the reconstruction).

A block with micro_depth L (pre-activation form):

    h0  = entry(x)                                    # BN-ReLU-Conv1x1 (stride 2: Conv3x3/2), C_in -> w_1
    h_i = BN-ReLU-Conv1x1(cat(h0..h_{i-1}) -> w_i); BN-ReLU-Conv3x3(groups = w_i / d)
    y   = shortcut(x) + fuse(cat(h0..hL))             # fuse: BN-ReLU-Conv1x1 -> C_out

The module knows nothing of whole networks, so it can be dropped into any CNN.
"""
import contextlib
from dataclasses import dataclass
from typing import List

import torch
import torch.nn as nn
import torch.utils.checkpoint
from timm.layers import BatchNormAct2d, DropPath
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from microdense.errors import ConfigError
from microdense.layers.concat_norm import cat_channels, count_batch, normalize_once, scale_shift_act
from microdense.layers.recompute import frozen_bn_stats

__all__ = ["MicroDenseBlockCfg", "MicroDenseBlock", "BlockChannels", "block_channels"]

PYRAMIDS = ("linear", "constant")
CARDINALITIES = ("adaptive", "fixed", "none")
AGGREGATIONS = ("micro_dense", "residual", "dense")


@dataclass(frozen=True)
class MicroDenseBlockCfg:
    """Every reconstructed choice of one block, as data.

    Attributes:
        micro_depth: L, densely connected layers inside the block.
        base_width: w_1, channels of the entry features and of the first layer.
        group_width: d, channels per group of each grouped 3x3 conv.
        pyramid: "linear" (w_i = i * w_1) or "constant" (w_i = w_1).
        cardinality: "adaptive" (groups = w_i / d, grows with the layer), "fixed" (groups = w_1 / d
            for every layer) or "none" (ordinary 3x3 convs).
        aggregation: "micro_dense" (dense inside, residual around), "residual" (layers chained,
            ResNeXt-like) or "dense" (dense inside, no block shortcut).
        preact: BN-ReLU-Conv ordering (True) or Conv-BN-ReLU (False).
        zero_init_residual: zero the residual branch's last weights so every block starts as its
            shortcut. Has no effect with aggregation="dense", which has no shortcut to start from.
    """

    micro_depth: int = 3
    base_width: int = 32
    group_width: int = 8
    pyramid: str = "linear"
    cardinality: str = "adaptive"
    aggregation: str = "micro_dense"
    preact: bool = True
    zero_init_residual: bool = True


@dataclass(frozen=True)
class BlockChannels:
    """Channel arithmetic of one block, derived once from its config."""

    widths: tuple[int, ...]  # w_1..w_L, output channels of each layer
    in_widths: tuple[int, ...]  # c_1..c_L, input channels of each layer's 1x1 conv
    groups: tuple[int, ...]  # groups of each layer's 3x3 conv
    fuse_width: int  # input channels of the fusing 1x1 conv


def _refuse(field: str, message: str) -> None:
    raise ConfigError(f"MicroDenseBlockCfg.{field}: {message}")


def block_channels(cfg: MicroDenseBlockCfg) -> BlockChannels:
    """Validate `cfg` and derive every width of the block. Pure: no modules are built.

    Raises:
        ConfigError: one line naming the field and the numbers that break a rule.
    """
    for field, allowed in (("pyramid", PYRAMIDS), ("cardinality", CARDINALITIES), ("aggregation", AGGREGATIONS)):
        value = getattr(cfg, field)
        if value not in allowed:
            _refuse(field, f"unknown value {value!r}; choose one of {', '.join(map(repr, allowed))}")
    if cfg.micro_depth < 1:
        _refuse("micro_depth", f"must be >= 1, got {cfg.micro_depth}")
    if cfg.base_width < 1:
        _refuse("base_width", f"must be >= 1, got {cfg.base_width}")
    if cfg.group_width < 1:
        _refuse("group_width", f"must be >= 1, got {cfg.group_width}")

    w1, d = cfg.base_width, cfg.group_width
    widths = tuple((i if cfg.pyramid == "linear" else 1) * w1 for i in range(1, cfg.micro_depth + 1))
    if cfg.cardinality != "none" and w1 % d:
        _refuse("base_width", f"{w1} is not divisible by group_width {d} (cardinality={cfg.cardinality!r})")
    if cfg.cardinality == "adaptive":
        groups = tuple(w // d for w in widths)
    elif cfg.cardinality == "fixed":
        groups = (w1 // d,) * len(widths)
    else:
        groups = (1,) * len(widths)

    if cfg.aggregation == "residual":
        in_widths = (w1,) + widths[:-1]
        fuse_width = widths[-1]
    else:
        in_widths = tuple(w1 + sum(widths[:i]) for i in range(len(widths)))
        fuse_width = w1 + sum(widths)
    return BlockChannels(widths=widths, in_widths=in_widths, groups=groups, fuse_width=fuse_width)


class ConvUnit(nn.Sequential):
    """One conv with its BN-ReLU: BN-ReLU-Conv (pre-activation), or Conv-BN-ReLU (timm's `ConvNormAct` order).

    `act=False` drops the ReLU of a post-activation unit (the last unit of a residual branch).
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            kernel_size: int,
            stride: int = 1,
            groups: int = 1,
            preact: bool = True,
            act: bool = True,
    ):
        conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        if preact:
            super().__init__(BatchNormAct2d(in_chs), conv)
        else:
            super().__init__(conv, BatchNormAct2d(out_chs, apply_act=act))
        self.preact = preact

    def zero_init_last(self) -> None:
        """Make the unit output zeros: zero the conv (pre-act) or the BN scale (post-act)."""
        nn.init.zeros_(self[1].weight)  # the conv (pre-act) or the BN after it (post-act)


def _any_requires_grad(tensors: List[torch.Tensor]) -> bool:
    for t in tensors:
        if t.requires_grad:
            return True
    return False


class ConcatConvUnit(ConvUnit):
    """A ConvUnit over the channel concatenation of a list of features.

    With `memory_efficient`, the concatenation and its BN-ReLU are recomputed in backward instead of
    stored (as torchvision's DenseNet does for its bottleneck), so the wide concatenated state and its
    normalised copy never stay in memory. Unlike torchvision's, the recomputation leaves BN running
    statistics alone, so both paths end with the same buffers.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, groups: int = 1, preact: bool = True,
                 act: bool = True, memory_efficient: bool = False):
        super().__init__(in_chs, out_chs, kernel_size, groups=groups, preact=preact, act=act)
        self.memory_efficient = memory_efficient

    def _run(self, features: List[torch.Tensor]) -> torch.Tensor:
        if torch.jit.is_scripting():
            x = torch.cat(features, 1)
        else:
            x = self._concat(features)
        for module in self:
            x = module(x)
        return x

    @torch.jit.unused
    def _concat(self, features: List[torch.Tensor]) -> torch.Tensor:
        # NOTE: an FX trace records the plain op: a custom autograd function cannot be traced symbolically.
        return torch.cat(features, 1) if is_fx_symbolic_tracing() else cat_channels(features)

    @torch.jit.unused
    def _checkpointed(self, features: List[torch.Tensor]) -> torch.Tensor:
        return torch.utils.checkpoint.checkpoint(
            lambda *fs: self._run(list(fs)), *features,
            use_reentrant=False,
            context_fn=lambda: (contextlib.nullcontext(), frozen_bn_stats(self)),
        )

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        if self.memory_efficient and not torch.jit.is_scripting() and _any_requires_grad(features):
            return self._checkpointed(features)
        return self._run(features)

    @torch.jit.unused
    def forward_normalized(self, normed: List[torch.Tensor]) -> torch.Tensor:
        """The pre-activation unit over features its BN's batch statistics have already normalised
        (`normalize_once`): its own scale, shift and ReLU, then its conv. Recomputed in backward when memory
        efficient; nothing in it touches running statistics, so the recomputation needs no guard."""
        bn, conv = self[0], self[1]
        if self.memory_efficient and _any_requires_grad(normed):
            return torch.utils.checkpoint.checkpoint(
                lambda *fs: conv(scale_shift_act(list(fs), bn)), *normed, use_reentrant=False)
        return conv(scale_shift_act(normed, bn))


class MicroDenseLayer(nn.Module):
    """Layer i of a block: bottleneck 1x1 over the concatenated state, then a grouped 3x3."""

    def __init__(self, in_chs: int, width: int, groups: int, preact: bool = True, memory_efficient: bool = False):
        super().__init__()
        self.conv1 = ConcatConvUnit(in_chs, width, 1, preact=preact, memory_efficient=memory_efficient)
        self.conv2 = ConvUnit(width, width, 3, groups=groups, preact=preact)

    def forward(self, features: List[torch.Tensor]) -> torch.Tensor:
        return self.conv2(self.conv1(features))


class MicroDenseBlock(nn.Module):
    """A residual block whose branch is a small dense aggregation of `cfg.micro_depth` layers.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        cfg: the block's configuration; refused at construction if it cannot be built.
        stride: 1, or 2 to halve the resolution (entry conv and shortcut take the stride).
        drop_path: stochastic-depth rate of the residual branch.
        memory_efficient: recompute every concat-BN-ReLU-1x1 (each layer's and the fusion's) in backward
            instead of storing it.
        share_batch_stats: in training, normalise each feature once by its batch statistics and let every
            pre-activation consumer apply only its own scale and shift (`microdense.layers.concat_norm`): the
            same function as normalising each concatenation anew (False, the reference path), for less work.
    """

    def __init__(
            self,
            in_chs: int,
            out_chs: int,
            cfg: MicroDenseBlockCfg = MicroDenseBlockCfg(),
            stride: int = 1,
            drop_path: float = 0.0,
            memory_efficient: bool = False,
            share_batch_stats: bool = True,
    ):
        super().__init__()
        chans = block_channels(cfg)
        if stride not in (1, 2):
            raise ConfigError(f"MicroDenseBlock: stride must be 1 or 2, got {stride}")
        self.channels = chans
        w1 = cfg.base_width
        self.entry = ConvUnit(in_chs, w1, 1 if stride == 1 else 3, stride=stride, preact=cfg.preact)
        self.layers = nn.ModuleList([
            MicroDenseLayer(c_in, w, g, preact=cfg.preact, memory_efficient=memory_efficient)
            for c_in, w, g in zip(chans.in_widths, chans.widths, chans.groups)
        ])
        self.concat = cfg.aggregation != "residual"
        self.has_shortcut = cfg.aggregation != "dense"
        # NOTE: post-activation blocks end like ResNet's: no ReLU inside the branch end, ReLU after the sum.
        self.fuse = ConcatConvUnit(chans.fuse_width, out_chs, 1, preact=cfg.preact, act=not self.has_shortcut,
                                   memory_efficient=memory_efficient)
        self.post_act = nn.ReLU(inplace=False) if not cfg.preact else nn.Identity()
        if not self.has_shortcut or (in_chs == out_chs and stride == 1):
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_chs),
            )
        # NOTE: only pre-activation consumers of concatenations share statistics; post-activation features are
        # normalised once anyway, and residual aggregation gives each feature one consumer.
        self.share_batch_stats = share_batch_stats and cfg.preact and self.concat
        self.drop_path = DropPath(drop_path) if drop_path > 0 and self.has_shortcut else nn.Identity()
        self.zero_init_residual = cfg.zero_init_residual and self.has_shortcut
        # NOTE: a lone block starts as its shortcut; a network that re-initialises every conv afterwards (its
        # `init_weights`, models/_common.py) calls zero_init_last() again, after its own initialisation.
        if self.zero_init_residual:
            self.zero_init_last()

    def zero_init_last(self) -> None:
        """Zero the residual branch's last weights: the block starts as its shortcut."""
        self.fuse.zero_init_last()

    def set_memory_efficient(self, enable: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, ConcatConvUnit):
                m.memory_efficient = enable

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the branch alone, without the shortcut."""
        if self.share_batch_stats and self.training and not torch.jit.is_scripting() and not self._tracing():
            return self._residual_shared_stats(x)
        features: List[torch.Tensor] = [self.entry(x)]
        for layer in self.layers:
            if self.concat:
                features.append(layer(features))
            else:
                features.append(layer([features[-1]]))
        return self.fuse(features if self.concat else [features[-1]])

    @torch.jit.unused
    def _tracing(self) -> bool:
        # NOTE: an FX trace takes the reference path: the shared one updates buffers outside the traced graph.
        return is_fx_symbolic_tracing()

    @torch.jit.unused
    def _residual_shared_stats(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) in training with each feature's batch statistics computed once (`microdense.layers.concat_norm`).

        Feature j (h0 is the entry's output) is read by layers j..L-1 and the fusion, at the same channels of each
        one's concatenation.
        """
        consumers = [layer.conv1 for layer in self.layers] + [self.fuse]
        count_batch([c[0] for c in consumers])
        normed: List[torch.Tensor] = []
        offset = 0
        h = self.entry(x)
        for j, layer in enumerate(self.layers):
            normed.append(normalize_once(h, [c[0] for c in consumers[j:]], offset))
            offset += h.shape[1]
            h = layer.conv2(layer.conv1.forward_normalized(normed))
        normed.append(normalize_once(h, [self.fuse[0]], offset))
        return self.fuse.forward_normalized(normed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop_path(self.residual(x))
        if self.has_shortcut:
            out = out + self.shortcut(x)
        return self.post_act(out)
