"""The DARTS CIFAR network built from any genotype, with optional micro-dense aggregation of its cells.

Liu et al., "DARTS: Differentiable Architecture Search" (evaluation network: stem, 20 cells,
reductions at 1/3 and 2/3, auxiliary head at 2/3, drop-path ramped over training). With
`micro_depth` L > 0, every run of L consecutive normal cells becomes one `MicroDenseCellGroup`
(docs/design.md §1.8, the NAS integration); `micro_depth=0` is the plain host, exactly.

`forward` returns logits only. Training code that wants the auxiliary logits calls
`forward_train`, and ramps drop-path with `set_progress`: both are hooks any model may offer.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead
from timm.models import register_model
from timm.models._features import feature_take_indices

from microdense.layers import checkpoint_call, route_strided_pointwise
from microdense.models import WidthKnob
from microdense.models._common import cifar_cfg
from microdense.models._pretrained import build_model_with_release, generate_release_cfgs
from microdense.nas.cells import Cell, MicroDenseCellGroup
from microdense.nas.genotypes import Genotype, genotype_to_json, parse_genotype, validate


class AuxiliaryHead(nn.Module):
    """DARTS's CIFAR auxiliary classifier, for 8x8 inputs."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True), nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsNetwork(nn.Module):
    """Args:
        genotype: a Genotype, a published name ("DARTS_V2") or any string `parse_genotype` reads.
        init_channels: C, the first stage's node width.
        layers: cells in all.
        micro_depth: normal cells per micro-dense group; 0 keeps the plain DARTS host.
        auxiliary: build the auxiliary head, whose logits `forward_train` adds (the darts recipe sets it; as in
            timm's inception_v3, a model created for inference has none, so every parameter serves `forward`).
        drop_path_rate: the drop-path probability reached at the end of training (`set_progress(1.0)`).

    Its width knob (`params_like`) is `init_channels`.
    """

    width_knob = WidthKnob("init_channels", int, 1, 1024)

    def __init__(self, genotype: Union[Genotype, str] = "DARTS_V2", init_channels: int = 36, layers: int = 20,
                 micro_depth: int = 0, auxiliary: bool = False, drop_path_rate: float = 0.2, num_classes: int = 10,
                 in_chans: int = 3, global_pool: str = "avg", drop_rate: float = 0.0, stem_multiplier: int = 3):
        super().__init__()
        genotype = parse_genotype(genotype) if isinstance(genotype, str) else validate(genotype)
        self.genotype = genotype
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.drop_path_rate, self.drop_path_prob = drop_path_rate, 0.0
        c_stem = stem_multiplier * init_channels
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        reductions = (layers // 3, 2 * layers // 3)
        c_pp, c_p, c = c_stem, c_stem, init_channels
        units: List[nn.Module] = []
        self.feature_info: List[Dict[str, Any]] = []
        reduction_prev, reduction, i = False, 1, 0
        self.aux_unit = -1
        while i < layers:
            if i in reductions:
                self.feature_info.append(dict(num_chs=c_p, reduction=reduction, module=f"cells.{len(units) - 1}"))
                c, reduction = c * 2, reduction * 2
                unit = Cell(genotype.reduce, genotype.reduce_concat, c_pp, c_p, c, True, reduction_prev)
                out, reduction_prev, step = unit.out_chs, True, 1
            elif micro_depth > 0:
                next_reduction = min([r for r in reductions if r > i] + [layers])
                n = min(micro_depth, next_reduction - i)
                cells = [Cell(genotype.normal, genotype.normal_concat, c_p, c_p, c, False, False) for _ in range(n)]
                unit = MicroDenseCellGroup(cells, c_p)
                out, reduction_prev, step = unit.out_chs, False, n
            else:
                unit = Cell(genotype.normal, genotype.normal_concat, c_pp, c_p, c, False, reduction_prev)
                out, reduction_prev, step = unit.out_chs, False, 1
            units.append(unit)
            c_pp, c_p = c_p, out
            if i <= 2 * layers // 3 < i + step:
                self.aux_unit, c_aux = len(units) - 1, c_p
            i += step
        self.cells = nn.ModuleList(units)
        self.feature_info.append(dict(num_chs=c_p, reduction=reduction, module=f"cells.{len(units) - 1}"))
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary and self.aux_unit >= 0 else None
        self.num_features = self.head_hidden_size = c_p
        self.head = ClassifierHead(c_p, num_classes, pool_type=global_pool, drop_rate=drop_rate)
        route_strided_pointwise(self)

    # -- hooks for training code ------------------------------------------------------------------------------------
    def set_progress(self, fraction: float) -> None:
        """Ramp drop-path: probability = drop_path_rate x fraction of training done (DARTS's schedule)."""
        self.drop_path_prob = self.drop_path_rate * min(max(fraction, 0.0), 1.0)

    def forward_train(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Logits and the auxiliary logits (an empty list when the model has no auxiliary head)."""
        aux: List[torch.Tensor] = []
        x = self._run_cells(x, aux_out=aux)
        return self.forward_head(x), aux

    # -- timm surface -----------------------------------------------------------------------------------------------
    def _run_cells(self, x: torch.Tensor, taps: Optional[List[int]] = None, out: Optional[List[torch.Tensor]] = None,
                   aux_out: Optional[List[torch.Tensor]] = None, stop: int = -1) -> torch.Tensor:
        s0 = s1 = self.stem(x)
        for i, unit in enumerate(self.cells):
            # NOTE: no `break` after `stop`: TorchScript unrolls loops over a ModuleList and allows none.
            if stop < 0 or i <= stop:
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    s0, s1 = s1, checkpoint_call(unit, s0, s1, self.drop_path_prob)
                else:
                    s0, s1 = s1, unit(s0, s1, self.drop_path_prob)
                if aux_out is not None and i == self.aux_unit and self.auxiliary_head is not None and self.training:
                    aux_out.append(self.auxiliary_head(s1))
                if taps is not None and out is not None and i in taps:
                    out.append(s1)
        return s1

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute every cell (or micro-dense cell group) in backward; BN running statistics are left alone."""
        self.grad_checkpointing = enable

    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^cells\.(\d+)")

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        """Outputs of the last unit of each resolution (before each reduction, and the final one)."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        unit_ids = [int(self.feature_info[i]["module"].split(".")[1]) for i in take_indices]
        intermediates: List[torch.Tensor] = []
        stop = unit_ids[-1] if stop_early or intermediates_only else -1
        x = self._run_cells(x, taps=unit_ids, out=intermediates, stop=stop)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the cells (and the auxiliary and classifier heads) that the intermediates at `indices` do not need."""
        take_indices, max_index = feature_take_indices(len(self.feature_info), indices)
        last_unit = int(self.feature_info[max_index]["module"].split(".")[1])
        self.cells = self.cells[:last_unit + 1]
        if self.aux_unit > last_unit:
            self.auxiliary_head = None
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._run_cells(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _create(variant: str, pretrained: bool = False, **kwargs: Any) -> DartsNetwork:
    if isinstance(kwargs.get("genotype"), Genotype):  # keep model args JSON-serialisable for exports
        kwargs["genotype"] = genotype_to_json(kwargs["genotype"])
    return build_model_with_release(DartsNetwork, variant, pretrained,
                                    feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2)), **kwargs)


default_cfgs = generate_release_cfgs({
    f"{name}.cifar10": cifar_cfg("stem.0", "head.fc") for name in (
        "darts_cifar", "darts_v1_cifar", "darts_v2_cifar", "microdense_darts_v1_cifar", "microdense_darts_v2_cifar")
})


@register_model
def darts_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNetwork:
    """DARTS evaluation network for any genotype (`genotype=` name, JSON or Genotype(...) string; default DARTS_V2)."""
    return _create("darts_cifar", pretrained, **kwargs)


@register_model
def darts_v1_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNetwork:
    """DARTS (first order) genotype, C=36, 20 cells, auxiliary head."""
    return _create("darts_v1_cifar", pretrained, **dict(dict(genotype="DARTS_V1"), **kwargs))


@register_model
def darts_v2_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNetwork:
    """DARTS (second order) genotype, C=36, 20 cells, auxiliary head (3.3M)."""
    return _create("darts_v2_cifar", pretrained, **dict(dict(genotype="DARTS_V2"), **kwargs))


@register_model
def microdense_darts_v1_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNetwork:
    """DARTS_V1 host with its normal cells aggregated micro-densely in groups of 3."""
    return _create("microdense_darts_v1_cifar", pretrained, **dict(dict(genotype="DARTS_V1", micro_depth=3), **kwargs))


@register_model
def microdense_darts_v2_cifar(pretrained: bool = False, **kwargs: Any) -> DartsNetwork:
    """DARTS_V2 host with its normal cells aggregated micro-densely in groups of 3."""
    return _create("microdense_darts_v2_cifar", pretrained, **dict(dict(genotype="DARTS_V2", micro_depth=3), **kwargs))
