"""Lightning's face of the data pipeline: loaders sharded by the trainer's rank, batches made ready on the device."""
from typing import Any, Optional, Tuple

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from microdense.data.pipeline import ImagePipeline


class ImageDataModule(ImagePipeline, pl.LightningDataModule):
    """An `ImagePipeline` (same arguments) that a Lightning trainer drives."""

    def __init__(self, *args: Any, **kwargs: Any):
        pl.LightningDataModule.__init__(self)
        ImagePipeline.__init__(self, *args, **kwargs)

    def prepare_data(self) -> None:
        # NOTE: Lightning runs this on one process per node: the only place a download may happen.
        self.download()

    def setup(self, stage: Optional[str] = None) -> None:
        # NOTE: callers set up before fit/validate (to size the model from the data); Lightning then calls again.
        self.load()

    def _rank(self) -> Tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        return self.loader(True, *self._rank())

    def val_dataloader(self) -> DataLoader:
        return self.loader(False, *self._rank())

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        training = self.trainer is not None and self.trainer.training
        step = self.trainer.global_step if training else 0
        return self.prepare_batch(batch, training, step, self._rank()[0])
