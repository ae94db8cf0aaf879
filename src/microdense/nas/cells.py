"""A DARTS cell built from a genotype, and the micro-dense group that aggregates consecutive cells."""
from typing import List, Sequence

import torch
import torch.nn as nn

from microdense.nas.genotypes import Edge
from microdense.nas.operations import OPS, FactorizedReduce, ReLUConvBN


def drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Zero whole samples of an op's output with probability `drop_prob`, rescaling the rest (DARTS's)."""
    if not training or drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


class Cell(nn.Module):
    """Nodes 2..5 each sum two operations over earlier states; the output concatenates `concat`.

    Args:
        edges, concat: the cell's half of a genotype.
        c_prev_prev, c_prev: channels of the two input states.
        c: channels of every node.
        reduction: this cell halves the resolution (its ops on states 0/1 have stride 2).
        reduction_prev: state 0 is at twice state 1's resolution (the previous cell reduced).
    """

    def __init__(self, edges: Sequence[Edge], concat: Sequence[int], c_prev_prev: int, c_prev: int, c: int,
                 reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.preprocess0 = FactorizedReduce(c_prev_prev, c) if reduction_prev else ReLUConvBN(c_prev_prev, c, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(c_prev, c, 1, 1, 0)
        self.ops = nn.ModuleList([OPS[op](c, 2 if reduction and src < 2 else 1, True) for op, src in edges])
        self.sources = [src for _, src in edges]
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.out_chs = self.multiplier * c

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        states: List[torch.Tensor] = [self.preprocess0(s0), self.preprocess1(s1)]
        node = states[1]
        # NOTE: a loop over the ModuleList itself (no indexing by a variable), so TorchScript can unroll it.
        for j, op in enumerate(self.ops):
            h = op(states[self.sources[j]])
            if not isinstance(op, nn.Identity):
                h = drop_path(h, drop_prob, self.training)
            if j % 2 == 0:
                node = h
            else:
                states.append(node + h)  # node 2 + j // 2 sums its two edges
        return torch.cat([states[i] for i in self.concat], dim=1)


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out))


class MicroDenseCellGroup(nn.Module):
    """L consecutive normal cells as the layers of one micro-dense block (docs/design.md §1.8).

    Cell i reads s0 = the group input g and s1 = conv-BN(cat(g, out_1, ..., out_{i-1})); the group returns
    g + conv-BN(cat(out_1, ..., out_L)): dense inside, residual around.
    """

    def __init__(self, cells: Sequence[Cell], c_in: int):
        super().__init__()
        self.cells = nn.ModuleList(cells)
        self.fuse_in = nn.ModuleList([conv_bn(c_in + sum(c.out_chs for c in cells[:i]), c_in)
                                      for i in range(len(cells))])
        self.fuse_out = conv_bn(sum(c.out_chs for c in cells), c_in)
        self.out_chs = c_in

    def forward(self, s0: torch.Tensor, g: torch.Tensor, drop_prob: float = 0.0) -> torch.Tensor:
        """`g`: the group input (the previous unit's output). `s0`, the unit before that, is not read: the
        signature is a Cell's, so a network calls every unit alike (which TorchScript needs)."""
        outs: List[torch.Tensor] = []
        for cell, fuse in zip(self.cells, self.fuse_in):
            s1 = fuse(torch.cat([g] + outs, dim=1))
            outs.append(cell(g, s1, drop_prob))
        return g + self.fuse_out(torch.cat(outs, dim=1))
