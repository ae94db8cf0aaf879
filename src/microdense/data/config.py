"""The data section of a training configuration: which images, and how they are split, batched and augmented."""
from dataclasses import dataclass
from typing import Optional

from microdense.errors import ConfigError
from microdense.fields import check_fields, setting

DATA_NAMES = ("synthetic", "cifar10", "cifar100", "imagefolder")


@dataclass(frozen=True)
class DataCfg:
    """What to load and how to augment it: the `data` section of a training configuration."""

    name: str = setting("synthetic", choices=DATA_NAMES)
    root: Optional[str] = None  # CIFAR's folder, or an ImageFolder tree
    download: bool = False
    val_split: Optional[float] = setting(None, gt=0, lt=1)  # None: the dataset's own val split, else 10% held out
    limit_images: Optional[int] = setting(None, ge=1)  # at most this many images per split, a seeded random subset
    batch_size: int = setting(128, ge=1)  # per device
    workers: Optional[int] = setting(None, ge=0)  # None: the machine's cores (at most 8)
    # large-image path only: train crop and eval size; None: the model's input size (timm's resolve_data_config)
    img_size: Optional[int] = setting(None, ge=8)
    crop_pct: float = setting(0.875, gt=0, le=1)  # large-image path only: eval resize = img_size / crop_pct
    crop_padding: int = setting(4, ge=0)
    flip: bool = True
    cutout: int = setting(0, ge=0)
    randaugment: Optional[str] = None  # a timm RandAugment spec, e.g. "rand-m9-mstd0.5"

    def __post_init__(self) -> None:
        check_fields(self)
        if self.randaugment is not None:
            from timm.data.auto_augment import rand_augment_transform
            try:
                rand_augment_transform(self.randaugment, {})
            except Exception as e:  # timm asserts and indexes its way through the spec string
                raise ConfigError(f"DataCfg.randaugment: {self.randaugment!r} is not a timm RandAugment spec like "
                                 f"'rand-m9-mstd0.5' ({type(e).__name__}: {e})") from None
