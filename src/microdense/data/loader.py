"""Sharded, epoch-seeded sampling with a resumable position, and a DataLoader that checkpoints it.

Lightning saves the state of a loader that has `state_dict`/`load_state_dict`, so a run killed
mid-epoch resumes on the very next batch it would have seen, with the same order.
"""
import math
from typing import Any, Dict, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class ShardedSampler(Sampler[int]):
    """Every rank's share of a dataset, in an order drawn from (seed, epoch).

    Args:
        num_samples: dataset size.
        rank, world_size: this process's shard.
        shuffle: permute per epoch; otherwise keep dataset order.
        seed: base of the per-epoch permutation.
        pad: repeat samples so every rank gets the same count (training under DDP needs it; evaluation
            does not and stays exact).
    """

    def __init__(self, num_samples: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0,
                 pad: bool = True):
        self.num_samples, self.rank, self.world_size = num_samples, rank, world_size
        self.shuffle, self.seed, self.pad = shuffle, seed, pad
        self.epoch = 0
        self.skip = 0  # samples of this epoch already consumed before a resume

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_samples / self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g)
        else:
            order = torch.arange(self.num_samples)
        if self.pad:
            total = len(self) * self.world_size
            order = torch.cat([order, order[: total - self.num_samples]])
        shard = order[self.rank::self.world_size]
        skip, self.skip = self.skip, 0
        return iter(shard[skip:].tolist())


class ResumableDataLoader(DataLoader):
    """A DataLoader over a `ShardedSampler` whose position Lightning saves in its checkpoints.

    `mark_consumed(batch_idx)` is called by the training system at the start of each batch: the
    count of batches truly consumed, independent of how far ahead Lightning prefetches.
    """

    def __init__(self, dataset: Dataset, sampler: ShardedSampler, **kwargs: Any):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.consumed = 0

    def mark_consumed(self, batch_idx: int) -> None:
        self.consumed = batch_idx + 1

    def state_dict(self) -> Dict[str, Any]:
        return {"epoch": self.sampler.epoch, "consumed_batches": self.consumed}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.sampler.epoch = state["epoch"]
        self.sampler.skip = state["consumed_batches"] * (self.batch_size or 1)
        self.consumed = state["consumed_batches"]


def batch_collate(batch: Any) -> Any:
    """Collate for datasets with `__getitems__`: the dataset already returns a whole batch."""
    return batch


