"""Batched augmentation of uint8 image tensors on the training device: no per-image Python.

The small-image fast path (airbench's approach): the whole dataset is one uint8 tensor, and each
batch is padded-and-cropped, flipped and optionally cut out with tensor ops where it will be used.
"""
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class BatchAugmentCfg:
    crop_padding: int = 4  # pixels of reflection padding before a random crop back to size; 0 = off
    flip: bool = True  # random horizontal flip with probability 0.5
    cutout: int = 0  # side in pixels of one zeroed square per image (after normalisation); 0 = off


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or float in [0, 255]) NCHW -> float32 normalised with per-channel mean/std given in [0, 1]."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean_t) / std_t


def augment_batch(images: torch.Tensor, cfg: BatchAugmentCfg, generator: Optional[torch.Generator] = None
                  ) -> torch.Tensor:
    """Random pad-and-crop and flip of a uint8 NCHW batch, each image drawn independently."""
    n, _, h, w = images.shape
    dev = images.device
    if cfg.crop_padding:
        p = cfg.crop_padding
        padded = F.pad(images.float(), (p, p, p, p), mode="reflect")
        dy = torch.randint(0, 2 * p + 1, (n,), device=dev, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), device=dev, generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h, device=dev)).view(n, 1, h, 1)
        cols = (dx.view(n, 1) + torch.arange(w, device=dev)).view(n, 1, 1, w)
        batch_idx = torch.arange(n, device=dev).view(n, 1, 1, 1)
        chan_idx = torch.arange(images.shape[1], device=dev).view(1, -1, 1, 1)
        images = padded[batch_idx, chan_idx, rows, cols].to(images.dtype)
    if cfg.flip:
        flip = torch.rand(n, device=dev, generator=generator) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1), images.flip(3), images)
    return images


class Cutout(torch.nn.Module):
    """`cutout` of one image, as a transform for the per-image (large-image) path: the same square as the batched
    small-image path zeroes, from the worker's own random stream."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return cutout(image.unsqueeze(0), self.size)[0]


def cutout(images: torch.Tensor, size: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Zero one size x size square per (normalised) image, centred anywhere (DeVries & Taylor, 2017)."""
    n, _, h, w = images.shape
    dev = images.device
    cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=generator)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    y0, x0 = cy - size // 2, cx - size // 2
    inside = (ys >= y0) & (ys < y0 + size) & (xs >= x0) & (xs < x0 + size)
    return images.masked_fill(inside.unsqueeze(1), 0.0)
