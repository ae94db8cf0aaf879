"""`microdense eval`: top-1/top-5/loss of a trained model, on the images it says it scored.

A run evaluated on the data it trained on (the same fingerprint) is scored on the images it held out, as it held them
out; data it never saw is scored whole (or on its own validation split, where it ships one).
"""
import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import lightning.pytorch as pl
import torch

from microdense.data.config import DataCfg
from microdense.data.sources import DEFAULT_VAL_SPLIT, DataSource, Split, TensorImages, hold_out, load_dataset
from microdense.errors import ConfigError, DataError
from microdense.plots import pyplot, save_png
from microdense.saved.run_folder import CONFIG_FILE, read_saved_config
from microdense.saved.trained_model import RunInfo
from microdense.saved.weights_source import WeightsSource
from microdense.train.config import OptimCfg, RunCfg
from microdense.train.datamodule import ImageDataModule
from microdense.train.quiet import third_party_noise_silenced
from microdense.train.system import ClassificationSystem


@dataclass
class EvalResult:
    top1: float
    top5: float
    loss: float
    images: int
    scored: str  # which images, in words: "12 held-out images of DIR, as the run held them out"
    per_class: Dict[str, float]
    confusion: Any


def recorded_data(source: WeightsSource, info: RunInfo) -> Dict[str, Any]:
    """What the run records about its data: the fingerprint (`data_fingerprint`) with its folder (`root`),
    `val_split` and `seed`. A run recorded before those sat beside the fingerprint has them in its config.yaml."""
    data = dict(info.provenance.get("data") or {})
    folder = source.run_dir
    if "seed" not in data and folder is not None and (folder / CONFIG_FILE).is_file():
        saved = read_saved_config(folder)
        data = {"name": saved.get("data.name"), "root": saved.get("data.root"),
                "val_split": saved.get("data.val_split"), "seed": saved.get("run.seed", 0), **data}
    return data


def plot_confusion(path: Path, matrix: Any, classes: Sequence[str]) -> None:
    """Row-normalised confusion matrix (true class by row) as a PNG."""
    plt = pyplot()

    m = matrix.float()
    m = m / m.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * n + 2), max(4, 0.45 * n + 1.5)))
    im = ax.imshow(m.numpy(), cmap="Blues", vmin=0, vmax=1)
    if n <= 40:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_png(fig, path)


def _names(classes: List[str]) -> str:
    return ", ".join(classes[:5]) + (f" and {len(classes) - 5} more" if len(classes) > 5 else "")


def _as_model_labels(source: DataSource, classes: List[str], where: str) -> DataSource:
    """The data with the model's class indices as labels: the same class names in any order are mapped; other names
    are refused (a count that happens to match would score one class as another)."""
    if source.classes == classes:
        return source
    missing = [c for c in classes if c not in source.classes]
    extra = [c for c in source.classes if c not in classes]
    if missing or extra:
        found = "; ".join(part for part in (f"it lacks {_names(missing)}" if missing else "",
                                            f"it has {_names(extra)}, which the model does not" if extra else "")
                          if part)
        raise DataError(f"{where} does not hold the model's classes ({found}); evaluate on data whose classes are the "
                        f"model's {len(classes)}: {_names(classes)}")
    index = torch.tensor([classes.index(c) for c in source.classes])
    splits = (None if s is None else replace(s, labels=index[s.labels]) for s in (source.train, source.val))
    return replace(source, train=next(splits), val=next(splits), classes=list(classes))


def _scored_split(source: DataSource, where: str, recorded: Dict[str, Any], val_split: Optional[float],
                  seed: int, all_images: bool) -> Tuple[DataSource, str]:
    """`source` with the images to score as its validation split, and those images in words."""
    same_data = recorded.get("sha256") is not None and recorded["sha256"] == (source.fingerprint or {}).get("sha256")
    if all_images:
        images = source.train if source.val is None else _joined(source.train, source.val)
        return replace(source, val=images), f"all {len(images):,} images of {where}"
    if val_split is not None:
        held = hold_out(source, val_split, seed)
        return held, f"{len(held.val):,} held-out images of {where} (val_split {val_split:g}, seed {seed})"
    if same_data and (recorded.get("val_split") or source.val is None):
        fraction = recorded.get("val_split") or DEFAULT_VAL_SPLIT  # None: what training held out, none shipped
        held = hold_out(source, fraction, seed)
        return held, (f"{len(held.val):,} held-out images of {where}, as the run held them out (val_split "
                      f"{fraction:g}, seed {seed})")
    if source.val is not None:
        return source, f"{len(source.val):,} images: the validation split of {where}"
    return replace(source, val=source.train), f"all {len(source.train):,} images of {where}"


def _joined(a: Split, b: Split) -> Split:
    """Two splits of one dataset as one."""
    if isinstance(a, TensorImages):
        return replace(a, images=torch.cat([a.images, b.images]), labels=torch.cat([a.labels, b.labels]))
    return replace(a, paths=a.paths + b.paths, labels=torch.cat([a.labels, b.labels]))


def evaluate(checkpoint: str, data: DataCfg, seed: Optional[int] = None, accelerator: str = "auto",
             flip: bool = False, plot: Optional[str] = None, own_data: bool = False,
             all_images: bool = False) -> EvalResult:
    """Evaluate `checkpoint` on `data` (its name, root, val_split, batch size and workers; the image size and crop
    are the model's), or with `own_data` on the data the run recorded (`data` then gives the batching alone).

    Which images: `all_images`, every one; `data.val_split` F, F of them held out by `seed`; otherwise the images the
    run held out when the data is what it trained on (by its recorded fingerprint; `seed` defaults to the run's), the
    data's own validation split where it ships one, or every image. `flip` averages each image's logits with its
    mirror's; `plot` writes the confusion matrix there.

    Raises:
        ConfigError: `own_data`, and the run records no data. DataError: the data's classes are not the model's.
    """
    source = WeightsSource.resolve(checkpoint)
    loaded = source.loaded
    recorded = recorded_data(source, loaded.info)
    if own_data:
        if not recorded.get("name"):
            raise ConfigError(f"{checkpoint} records no data it was trained on; name the data to evaluate it on "
                              "(data.name and data.root: --data, --data-dir)")
        data = replace(data, name=recorded["name"], root=recorded.get("root"))
        if data.name == "imagefolder" and not Path(data.root or "").is_dir():
            raise FileNotFoundError(f"{checkpoint} was trained on the images in {data.root}, which is not a folder "
                                    f"here ({Path.cwd()}); name the data to evaluate it on (data.name and data.root: "
                                    "--data, --data-dir)")
    if seed is None:  # the run's own, for its kind of data: the synthetic set it drew, the images it held out
        seed = (recorded.get("seed") or 0) if data.name == recorded.get("name") else 0
    num_classes = loaded.model.num_classes
    where = {"imagefolder": data.root, "synthetic": f"the synthetic set (seed {seed})"}.get(
        data.name, f"{data.name} in {data.root or 'data'}")
    source = load_dataset(data.name, data.root, False, seed)
    classes: List[str] = loaded.info.classes or [str(i) for i in range(num_classes)]
    source = _as_model_labels(source, classes, where)
    source, scored = _scored_split(source, where, recorded, data.val_split, seed, all_images)
    data = replace(data, img_size=loaded.info.input_size[-1], crop_pct=loaded.info.crop_pct)
    datamodule = ImageDataModule(data, num_classes, source=source, mean_std=(loaded.info.mean, loaded.info.std))
    datamodule.setup("validate")
    system = ClassificationSystem(loaded.model, OptimCfg(), num_classes, run=RunCfg(epochs=1, val_flip=flip))
    # NOTE: Lightning draws its bar on stdout; stdout is the command's output (eval --json), so it goes to stderr
    with third_party_noise_silenced(), contextlib.redirect_stdout(sys.stderr):
        trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=True)
        [metrics] = trainer.validate(system, datamodule=datamodule, verbose=False)
    per_class = dict(zip(classes, system.val_per_class.compute().tolist()))
    confusion = system.val_confusion.compute().cpu()
    if plot:
        plot_confusion(Path(plot), confusion, classes)
    return EvalResult(top1=metrics["val/top1"], top5=metrics["val/top5"], loss=metrics["val/loss"],
                      images=len(source.val), scored=scored, per_class=per_class, confusion=confusion)
