"""The timm model surface shared by every network here that is a stem, stages and a head.

A subclass builds `self.stem`, `self.stages` (an nn.Sequential of stages, each an nn.Sequential of
blocks), `self.final_norm`, `self.head` (timm's ClassifierHead) and `self.feature_info` (one entry
per stage); this class gives it forward_features / forward_head / forward_intermediates,
classifier reset, grad checkpointing and group matching, as timm's own models have them.
"""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

from microdense.layers import checkpoint_blocks


class StagedNet(nn.Module):
    grad_checkpointing: bool

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = "NCHW",
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward features and return the output of each stage named by `indices`.

        Args:
            x: input images.
            indices: last n stages if int, all if None, these stages if a sequence.
            norm: apply the final BN-ReLU to the last stage's intermediate.
            stop_early: stop after the last stage wanted.
            output_fmt: only "NCHW".
            intermediates_only: return the intermediates alone.
        """
        assert output_fmt == "NCHW", "Output format must be NCHW."
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        intermediates = []
        x = self.stem(x)
        stages = self.stages if not stop_early else self.stages[:max_index + 1]
        for i, stage in enumerate(stages):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_blocks(stage, x)
            else:
                x = stage(x)
            if i in take_indices:
                intermediates.append(self.final_norm(x) if norm and i == last_idx else x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.stages):
            x = self.final_norm(x)
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop the stages (and head) that the intermediates at `indices` do not need."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        if prune_norm or max_index < len(self.feature_info) - 1:
            self.final_norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_blocks(self.stages, x)
        else:
            x = self.stages(x)
        return self.final_norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
