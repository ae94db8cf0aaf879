"""`microdense eval`: top-1/top-5/loss of a trained model on a dataset's validation split."""
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional

import lightning.pytorch as pl

from microdense.data.config import DataCfg
from microdense.errors import ConfigError
from microdense.train.datamodule import ImageDataModule
from microdense.data.sources import DataSource, load_imagefolder, load_source
from microdense.train.config import OptimCfg, RunCfg
from microdense.train.saved_model import load_model
from microdense.train.quiet import third_party_noise_silenced
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
            raise ConfigError("an imagefolder dataset needs data.root (--data-dir): a root/<class>/<image> tree")
        source = load_imagefolder(data_dir)
        return replace(source, val=source.val or source.train)
    return load_source(data, data_dir, False, val_split, seed)


def evaluate(checkpoint: str, data: DataCfg, seed: int = 0, accelerator: str = "auto", flip: bool = False,
             plot: Optional[str] = None) -> EvalResult:
    """Evaluate `checkpoint` on the validation split of `data` (its name, root, val_split, batch size and workers;
    the image size and crop are the model's). `seed` draws the held-out split as training did; `flip` averages each
    image's logits with its mirror's; `plot` writes the confusion matrix there."""
    loaded = load_model(Path(checkpoint))
    num_classes = loaded.model.num_classes
    source = _eval_source(data.name, data.root, data.val_split, seed)
    data = replace(data, img_size=loaded.info.input_size[-1], crop_pct=loaded.info.crop_pct)
    datamodule = ImageDataModule(data, num_classes, source=source, mean_std=(loaded.info.mean, loaded.info.std),
                                 seed=seed)
    datamodule.setup("validate")
    system = ClassificationSystem(loaded.model, OptimCfg(), num_classes, run=RunCfg(epochs=1, val_flip=flip))
    with third_party_noise_silenced():
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
