"""One place that turns a data choice into train/val loaders and batches ready for a model, with no training engine.

Small images take the fast path: the split is one uint8 tensor, a loader slices whole batches out of
it (`__getitems__`, no per-image Python), and `prepare_batch` augments and normalises the batch on the training
device. Large images go through torchvision transforms v2 in worker processes. The Lightning data module that
serves a trainer (`microdense.train.datamodule`) is a thin face of this.
"""
import logging
import os
from typing import Any, List, Optional, Sequence, Tuple

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from microdense.data.augment import BatchAugmentCfg, Cutout, augment_batch, cutout, normalize
from microdense.data.config import DataCfg
from microdense.data.loader import ResumableDataLoader, ShardedSampler, batch_collate
from microdense.data.sources import DataSource, FileImages, TensorImages, load_source
from microdense.errors import ConfigError

log = logging.getLogger(__name__)


class TensorImageDataset(Dataset):
    """Batches sliced from an in-memory uint8 tensor; optional per-image transform (RandAugment)."""

    def __init__(self, split: TensorImages, transform: Optional[Any] = None):
        self.images, self.labels, self.transform = split.images, split.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.__getitems__([i])

    def __getitems__(self, indices: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        images = self.images[idx]
        if self.transform is not None:
            images = torch.stack([
                v2.functional.pil_to_tensor(self.transform(v2.functional.to_pil_image(img))) for img in images])
        return images, self.labels[idx]


class FileImageDataset(Dataset):
    def __init__(self, split: FileImages, transform: Any):
        self.paths, self.labels, self.transform = split.paths, split.labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as img:
            return self.transform(img.convert("RGB")), self.labels[i]


def _rand_augment(spec: str) -> Any:
    """timm's RandAugment (PIL in, PIL out), filling with the ImageNet mean colour."""
    from timm.data.auto_augment import rand_augment_transform
    return rand_augment_transform(spec, dict(img_mean=(124, 116, 104)))


def default_workers() -> int:
    """Loader workers where the configuration leaves them: the cores this process may use, at most 8 (more than the
    machine has makes PyTorch warn, and slows every core)."""
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _channel_stats(images: torch.Tensor) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    x = images[: 50_000].float().div_(255)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).tolist())


class ImagePipeline:
    """Train/val loaders for any supported data, with the small-image fast path when it applies.

    Args:
        cfg: what to load and how to augment it.
        num_classes: classifier size; None takes it from the data. Refused if smaller than the labels.
        source: data already loaded (evaluation); None loads `cfg`'s.
        mean_std: fixed normalisation (a trained model's); None measures it on the training split.
        seed: the held-out split, the sample order and the augmentation draws follow it.
        model_size: the model's input side (its timm pretrained_cfg): large images are cropped to it unless
            `cfg.img_size` says otherwise.
    """

    def __init__(self, cfg: DataCfg, num_classes: Optional[int] = None, source: Optional[DataSource] = None,
                 mean_std: Optional[Tuple[Sequence[float], Sequence[float]]] = None, seed: int = 0,
                 model_size: int = 224):
        self.cfg = cfg
        self.img_size = cfg.img_size or model_size  # the large-image path's train crop and eval size
        self.seed = seed  # the run's seed: split, order and augmentation draws
        self.requested_classes = num_classes
        self.source = source
        self.mean_std = mean_std  # fixed normalisation (evaluating a trained model); None: from the data
        self.mean: Sequence[float] = (0.5, 0.5, 0.5)
        self.std: Sequence[float] = (0.25, 0.25, 0.25)
        self._ready = False

    def download(self) -> None:
        """Fetch the dataset where it is downloadable and asked to be (one process per node should)."""
        if self.cfg.download and self.cfg.name in ("cifar10", "cifar100"):
            load_source(self.cfg.name, self.cfg.root, True, None, self.seed)

    def load(self) -> None:
        """Read the splits and fix the normalisation; once (later calls return at once)."""
        if self._ready:
            return
        if self.source is None:
            c = self.cfg
            self.source = load_source(c.name, c.root, False, c.val_split, self.seed, c.limit_images)
        self._check_labels()
        if self.mean_std is not None:
            self.mean, self.std = self.mean_std
        elif self.small:
            self.mean, self.std = _channel_stats(self.source.train.images)
        else:
            from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
            self.mean, self.std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
        self._ready = True

    def _check_labels(self) -> None:
        found = max(int(split.labels.max()) + 1 for split in (self.source.train, self.source.val) if split is not None)
        if self.requested_classes is not None and self.requested_classes < found:
            raise ConfigError(f"num_classes {self.requested_classes} is smaller than the {found} classes found in "
                             f"the data; raise it to at least {found}, or leave it unset to use the data's count")

    @property
    def small(self) -> bool:
        return isinstance(self.source.train, TensorImages)

    @property
    def num_classes(self) -> int:
        return self.requested_classes or len(self.source.classes)

    @property
    def image_size(self) -> Tuple[int, int]:
        if self.small:
            return tuple(self.source.train.images.shape[-2:])
        return self.img_size, self.img_size

    def _large_transform(self, train: bool) -> v2.Compose:
        c, size = self.cfg, self.img_size
        if train:
            ops: List[Any] = [v2.RandomResizedCrop(size, antialias=True)]
            if c.flip:
                ops.append(v2.RandomHorizontalFlip())
            if c.randaugment:
                ops.append(_rand_augment(c.randaugment))
        else:
            ops = [v2.Resize(int(round(size / c.crop_pct)), antialias=True), v2.CenterCrop(size)]
        ops += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        if train and c.cutout:
            ops.append(Cutout(c.cutout))  # the same square, in pixels, as the small-image path
        return v2.Compose(ops)

    def loader(self, train: bool, rank: int = 0, world: int = 1) -> DataLoader:
        """The training or validation loader of process `rank` of `world` (each process its own shard)."""
        split = self.source.train if train else self.source.val
        c = self.cfg
        workers = default_workers() if c.workers is None else c.workers
        sampler = ShardedSampler(len(split), rank, world, shuffle=train, seed=self.seed, pad=train)
        if self.small:
            transform = _rand_augment(c.randaugment) if train and c.randaugment else None
            dataset = TensorImageDataset(split, transform)
            workers = workers if transform is not None else 0  # slicing a tensor needs no workers
            kwargs = dict(collate_fn=batch_collate, num_workers=workers, persistent_workers=workers > 0)
        else:
            dataset = FileImageDataset(split, self._large_transform(train))
            kwargs = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
        drop_last = train and len(split) >= c.batch_size * world
        return ResumableDataLoader(dataset, sampler, batch_size=c.batch_size, drop_last=drop_last, **kwargs)

    def prepare_batch(self, batch: Any, training: bool, step: int = 0, rank: int = 0) -> Any:
        """A batch on its device, made ready for the model: small images augmented (when `training`) and normalised
        as a batch; large images come ready from their transforms."""
        if not self.small:
            return batch
        images, labels = batch
        if training:
            # NOTE: the generator is seeded by (seed, step, rank): a resumed run draws the same augmentations.
            g = torch.Generator(device=images.device)
            g.manual_seed(hash((self.seed, step, rank)) & 0xFFFF_FFFF)
            images = augment_batch(images, BatchAugmentCfg(self.cfg.crop_padding, self.cfg.flip), g)
        images = normalize(images, self.mean, self.std)
        if training and self.cfg.cutout:
            images = cutout(images, self.cfg.cutout, g)
        return images, labels
