"""`microdense eval`: top-1/top-5/loss of a trained model on a dataset's validation split."""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning.pytorch as pl

from microdense.data.config import DataCfg
from microdense.data.datamodule import ImageDataModule
from microdense.data.sources import DataSource, load_imagefolder, load_source
from microdense.train.config import TrainConfig
from microdense.train.export import load_model
from microdense.train.report import plot_confusion
from microdense.train.system import ClassificationSystem


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    images: int
    per_class: Dict[str, float]
    confusion: Any


def _eval_source(data: str, data_dir: Optional[str], val_split: Optional[float], seed: int) -> DataSource:
    """The split to evaluate: the dataset's own val/test split; for a bare ImageFolder tree, every image
    (or, with `val_split`, the same held-out fraction that training used)."""
    if data == "imagefolder" and val_split is None:
        if not data_dir:
            raise ValueError("an imagefolder dataset needs data_dir: a root/<class>/<image> tree")
        source = load_imagefolder(data_dir)
        return replace(source, val=source.val or source.train)
    return load_source(data, data_dir, False, val_split, seed)


def evaluate(checkpoint: str, data: str, data_dir: Optional[str] = None, val_split: Optional[float] = None,
             batch_size: int = 256, workers: int = 4, seed: int = 0, plot: Optional[str] = None,
             accelerator: str = "auto", flip: bool = False) -> EvalResult:
    """Evaluate `checkpoint` on `data`'s validation split; `flip` averages each image's logits with its mirror's."""
    loaded = load_model(Path(checkpoint))
    num_classes = loaded.model.num_classes
    source = _eval_source(data, data_dir, val_split, seed)
    cfg = DataCfg(name=data, root=data_dir, val_split=val_split, batch_size=batch_size, workers=workers,
                  img_size=loaded.info.input_size[-1], crop_pct=loaded.info.crop_pct)
    datamodule = ImageDataModule(cfg, num_classes, source=source, mean_std=(loaded.info.mean, loaded.info.std),
                                 seed=seed)
    datamodule.setup("validate")
    system = ClassificationSystem(loaded.model, TrainConfig(val_flip=flip), num_classes)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=True)
    [metrics] = trainer.validate(system, datamodule=datamodule, verbose=False)
    classes: List[str] = loaded.info.classes or [str(i) for i in range(num_classes)]
    per_class = dict(zip(classes, system.val_per_class.compute().tolist()))
    confusion = system.val_confusion.compute().cpu()
    if plot:
        plot_confusion(Path(plot), confusion, classes)
    return EvalResult(top1=metrics["val/top1"], top5=metrics["val/top5"], loss=metrics["val/loss"],
                      images=len(source.val), per_class=per_class, confusion=confusion)
