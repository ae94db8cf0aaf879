"""`microdense train`: build data, model and Lightning Trainer from a TrainConfig, fit, export, report."""
import dataclasses
import logging
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import lightning.pytorch as pl
import timm
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from microdense.errors import TrainingDiverged
from microdense.io import atomic_write_text
from microdense.models.config import build_model, model_args
from microdense.models.size import measure_size
from microdense.provenance import provenance
from microdense.saved.run_folder import (BEST_CHECKPOINT, CHECKPOINT_DIR, COMMAND_FILE, CONFIG_FILE, LAST_CHECKPOINT,
                                         METRICS_FILE, PREVIOUS, last_checkpoint, read_metrics)
from microdense.saved.trained_model import RunInfo, nonfinite, save_for_timm
from microdense.saved.weights_source import WeightsSource, init_from, start_source
from microdense.train.checkpoint_io import SafeCheckpointIO
from microdense.train.config import OptimCfg, TrainConfig, save_config
from microdense.train.datamodule import ImageDataModule
from microdense.train.epoch_log import EpochLog
from microdense.train.interrupt import StopOnInterrupt
from microdense.train.quiet import third_party_noise_silenced
from microdense.train.system import ClassificationSystem

log = logging.getLogger(__name__)


class ProgressBar(RichProgressBar):
    """Lightning's rich bar without `v_num`, the logger's version name (ours is a fixed folder name)."""

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items


@dataclass
class TrainResult:
    run_dir: Path
    val_top1: Optional[float]
    val_top5: Optional[float]
    val_loss: Optional[float]
    epochs: float  # epochs done, fractional when a limit stopped the run mid-epoch
    steps: int
    seconds: float  # wall time of this process's fit (validation and checkpoints included); resumed: since then
    train_seconds: float  # training time alone: what a time budget counts
    images: int = 0  # training images processed (steps x batch size x processes)
    params: Optional[int] = None  # the model's size, as logged at the start (global rank 0)
    macs: Optional[int] = None  # per image at the training image size
    primary: bool = True  # this process is global rank 0
    provenance: Dict[str, Any] = dataclasses.field(default_factory=dict)  # code, libraries, machine and data
    resumed_at_step: Optional[int] = None  # the step this process resumed the run at; None: it ran from the start

    @property
    def train_img_s(self) -> Optional[float]:
        """The whole run's training rate; a last epoch cut short by a limit can be a single step, whose rate says
        nothing."""
        return self.images / self.train_seconds if self.train_seconds else None


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model.name}-{cfg.data.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _is_launch_primary() -> bool:
    """True in the process a person started; False in the other ranks that DDP launchers (Lightning's, torchrun,
    SLURM) start, which must not judge the run folder that the primary has already prepared."""
    return all(int(os.environ.get(var, "0") or 0) == 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def previous_dir(run_dir: Path) -> Path:
    """Where a restart moves what `run_dir` holds: its first free previous-N."""
    n = 1
    while (run_dir / f"{PREVIOUS}{n}").exists():
        n += 1
    return run_dir / f"{PREVIOUS}{n}"


def _move_aside(run_dir: Path) -> Optional[Path]:
    """A restart: everything `run_dir` holds but earlier previous-N folders, moved into its next previous-N (nothing
    saved is lost; each move a rename within the folder)."""
    if not _is_launch_primary() or not run_dir.is_dir():
        return None
    entries = [p for p in run_dir.iterdir() if not re.fullmatch(rf"{PREVIOUS}\d+", p.name)]
    if not entries:
        return None
    aside = previous_dir(run_dir)
    aside.mkdir()
    for p in entries:
        p.rename(aside / p.name)
    log.info("restart: what %s held is now in %s", run_dir, aside)
    return aside


def check_run_dir(run_dir: Path, resume: bool, restart: bool = False) -> Optional[Path]:
    """Refuse to write over another run (a restart moves it aside); return the checkpoint to resume from, if
    resuming. Creates nothing."""
    last = last_checkpoint(run_dir)
    if not _is_launch_primary() or restart:
        return last if resume else None
    holds_run = (run_dir / CONFIG_FILE).exists() or (run_dir / CHECKPOINT_DIR).exists()
    if resume:
        if not last.exists():
            raise FileNotFoundError(f"nothing to resume in {run_dir}: no {CHECKPOINT_DIR}/{LAST_CHECKPOINT}; start "
                                    f"anew there instead{' (run.restart)' if holds_run else ''}")
        return last
    if holds_run:
        raise FileExistsError(f"{run_dir} already holds a run; resume it (run.resume), start it anew (run.restart: "
                              f"it moves into {previous_dir(run_dir)}), or choose another run folder")
    return None


def _log_version(run_dir: Path) -> str:
    """The step-level CSV log's folder: `logs`, then `logs-2`, `logs-3`, ... for each resume (Lightning's CSV logger
    deletes the metrics file it finds, so a resumed run writes beside it)."""
    name, n = "logs", 1
    while (run_dir / name).exists():
        n += 1
        name = f"logs-{n}"
    return name


def _devices(value: str) -> Any:
    return int(value) if str(value).isdigit() else value


def _start_weights(model: torch.nn.Module, cfg: TrainConfig, source: Optional[WeightsSource],
                   resuming: bool) -> Optional[Dict[str, Any]]:
    """Load `model.init_from`'s weights into `model` (`model.pretrained`'s build_model has loaded); returns what the
    run started from, for its provenance. A resumed run's weights come from its checkpoint."""
    if source is None:
        return None
    if cfg.model.init_from:
        return dict(source=cfg.model.init_from) if resuming else init_from(model, source)
    return source.origin()


def _lr_text(optim: OptimCfg, peak: float, global_batch: int) -> str:
    """The learning rate a run uses and where it came from, for its first line."""
    if optim.lr_base_size is None or peak == optim.lr:
        return f"peak lr {peak:g} at {global_batch} images per step"
    return (f"peak lr {peak:g}: {optim.lr:g} per {optim.lr_base_size} images, scaled ({optim.lr_scale}) to "
            f"{global_batch} images per step")


def cpu_oversubscribed(processes: int, cores: int, lr: str) -> Optional[str]:
    """The one line a CPU run gets when it starts more training processes than the machine has cores (gloo, one per
    device): they share the cores, yet the learning rate follows their combined batch; None when they fit."""
    if processes <= cores:
        return None
    return (f"microdense: run.devices starts {processes} training processes on a CPU with {cores} core"
            f"{'s' if cores > 1 else ''}: they share the cores, so a step is not faster, and the run takes {lr}; "
            "run.devices 1 (--devices 1) runs one")


def _checkpoint_step(path: Path) -> Optional[int]:
    """The global step a checkpoint was saved at (read safely, tensors and plain data only)."""
    return torch.load(path, map_location="cpu", weights_only=True).get("global_step")


def model_side(name: str) -> int:
    """The input side a registered model is designed for (its timm pretrained_cfg), known before it is built."""
    pretrained = timm.models.get_pretrained_cfg(name)
    return pretrained.input_size[-1] if pretrained else 224


def _prepare_data(cfg: TrainConfig, start: Optional[RunInfo]) -> ImageDataModule:
    """The data module, set up for fitting. Fine-tuned weights (`start`: their record) keep the normalisation they were
    trained with, and large images are cropped to the model's input size unless data.img_size says otherwise, as
    timm's data config does."""
    datamodule = ImageDataModule(cfg.data, cfg.model.num_classes, seed=cfg.run.seed,
                                 mean_std=(tuple(start.mean), tuple(start.std)) if start else None,
                                 model_size=model_side(cfg.model.name))
    if _is_launch_primary():
        datamodule.prepare_data()  # downloads, before the model can be sized from the data
    datamodule.setup("fit")
    if datamodule.small:  # NOTE: batches are tensor slices on purpose; Lightning's advice of more workers is moot
        warnings.filterwarnings("ignore", message=r"The '\w+_dataloader' does not have many workers")
    return datamodule


def _build_network(cfg: TrainConfig, num_classes: int, source: Optional[WeightsSource],
                   resuming: bool) -> Tuple[torch.nn.Module, Optional[Dict[str, Any]]]:
    """The network, with the weights it starts from (returns what they were, for the provenance)."""
    model = build_model(cfg.model, num_classes)
    started_from = _start_weights(model, cfg, source, resuming)
    if cfg.run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, started_from


def _make_trainer(cfg: TrainConfig, run_dir: Path, callbacks: Sequence[pl.Callback],
                  progress: bool) -> Tuple[pl.Trainer, StopOnInterrupt]:
    """Lightning's Trainer with the run folder's checkpoints, logs and epoch report; and the Ctrl-C handler."""
    run = cfg.run
    ckpt_dir = run_dir / CHECKPOINT_DIR
    best = ModelCheckpoint(dirpath=ckpt_dir, filename=Path(BEST_CHECKPOINT).stem, monitor="val/top1", mode="max",
                           auto_insert_metric_name=False, enable_version_counter=False)
    # NOTE: a second, unmonitored callback keeps last.ckpt current at every epoch end (and every N steps).
    last = ModelCheckpoint(dirpath=ckpt_dir, filename=Path(LAST_CHECKPOINT).stem,
                           every_n_train_steps=run.checkpoint_every or None, auto_insert_metric_name=False,
                           enable_version_counter=False)
    stopper = StopOnInterrupt(run_dir)
    loggers = [CSVLogger(run_dir, name="", version=_log_version(run_dir)),
               TensorBoardLogger(run_dir, name="", version="tensorboard")]
    trainer = pl.Trainer(
        accelerator=run.accelerator,
        devices=_devices(run.devices),
        num_nodes=run.num_nodes,
        precision=run.precision,
        max_epochs=run.epochs or -1,  # -1: no epoch limit (steps or the time budget end the run)
        max_steps=run.max_steps,
        gradient_clip_val=cfg.optim.grad_clip,
        deterministic=run.deterministic,
        use_distributed_sampler=False,  # the data module shards by rank itself, resumably
        default_root_dir=run_dir,
        logger=loggers,
        callbacks=[best, last, EpochLog(run_dir), LearningRateMonitor("step"), stopper,
                   *([ProgressBar()] if progress else []), *callbacks],
        enable_progress_bar=progress,
        enable_model_summary=False,  # NOTE: Lightning's lists the metrics as modules and FLOPs as 0; ours is a line
        plugins=[SafeCheckpointIO()],
        log_every_n_steps=10,
        num_sanity_val_steps=0,
    )
    return trainer, stopper


def _fit(trainer: pl.Trainer, system: ClassificationSystem, datamodule: ImageDataModule, resume_from: Optional[Path],
         stopper: StopOnInterrupt, run_dir: Path) -> float:
    """Fit, and turn how it stopped into the package's words; returns the wall seconds it took."""
    start = time.perf_counter()
    try:
        trainer.fit(system, datamodule=datamodule, ckpt_path=resume_from)
        if nonfinite(system._eval_model().state_dict()):  # the very last step overflowed: nothing is exported
            raise TrainingDiverged.at(trainer.global_step, f"at its last step ({trainer.global_step}): the final "
                                      "weights hold NaN or inf", trainer.optimizers[0].param_groups[0]["lr"])
    except TrainingDiverged as e:
        last = last_checkpoint(run_dir)
        kept = (f"{last} keeps the last weights saved before it (step {_checkpoint_step(last)}), all finite"
                if last.exists() else "no checkpoint had been saved before it")
        again = (f"start again in the same folder with run.restart (--restart), which moves what it holds into "
                 f"{previous_dir(run_dir)}")
        raise TrainingDiverged(f"{e}; {kept}; {again}", e.step, e.loss, e.lr) from None
    except SystemExit:  # Lightning exits after a KeyboardInterrupt it caught (a second Ctrl-C)
        if stopper.requested:
            raise KeyboardInterrupt from None
        raise
    return time.perf_counter() - start


def train(cfg: TrainConfig, callbacks: Sequence[pl.Callback] = (), progress: bool = True,
          command: Optional[str] = None) -> TrainResult:
    """Train the model `cfg` names as it says; returns the final figures (also in the run folder).

    Everything is checked (the configuration when it was made; the run folder, the sources it starts from, the
    data) before the run folder is made. Warnings it silences are silenced for the call alone.
    `progress`: show Lightning's progress bar (the one-line size summary follows the log level).
    `command`: the command that started the run, kept in RUN/command (a resumed run keeps the first) so that a
    release of the run folder names how to reproduce it.

    Raises:
        TrainingInterrupted: Ctrl-C stopped training after saving last.ckpt.
        TrainingDiverged: a loss, gradient norm or weight turned NaN or inf; training stopped before any non-finite
            weights were saved (the run folder keeps its last finite checkpoint).
    """
    with third_party_noise_silenced():
        return _train(cfg, callbacks, progress, command)


def _train(cfg: TrainConfig, callbacks: Sequence[pl.Callback], progress: bool, command: Optional[str]) -> TrainResult:
    # the run folder: where, and whether it continues a run
    run_dir = Path(cfg.run.out) if cfg.run.out else default_run_dir(cfg)
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, out=str(run_dir)))
    resume_from = check_run_dir(run_dir, cfg.run.resume, cfg.run.restart)
    if resume_from is not None:  # Lightning warns that the checkpoint folder it resumes from holds checkpoints
        warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    source = start_source(cfg.model)  # found now, before the run folder is made; read once, below
    pl.seed_everything(cfg.run.seed, workers=True, verbose=False)

    # data, network, trainer
    datamodule = _prepare_data(cfg, source.info if source else None)
    num_classes = datamodule.num_classes
    model, started_from = _build_network(cfg, num_classes, source, resume_from is not None)
    if cfg.run.restart:
        _move_aside(run_dir)
        # NOTE: the saved configuration is the new run's own, which a later --resume continues
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, restart=False))
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer, stopper = _make_trainer(cfg, run_dir, callbacks, progress)
    global_batch = datamodule.cfg.batch_size * trainer.world_size
    steps_per_epoch = max(1, len(datamodule.source.train) // global_batch)
    system = ClassificationSystem(model, cfg.optim, num_classes, steps_per_epoch, cfg.run, global_batch)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    crowded = cpu_oversubscribed(trainer.num_devices, cores, _lr_text(cfg.optim, system.peak_lr, global_batch))
    if crowded and trainer.is_global_zero and isinstance(trainer.accelerator, CPUAccelerator):
        log.warning(crowded)
    if system.ema is not None:  # NOTE: the weights' running average is kept in eval mode on purpose
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

    # what the run is, written before it starts
    c, (h, w) = 3, datamodule.image_size
    # NOTE: the data's folder, held-out fraction and seed beside its fingerprint: what `eval` needs to score the
    # images the run held out, from the weights alone
    data = {**datamodule.source.fingerprint, "root": cfg.data.root, "val_split": cfg.data.val_split,
            "seed": cfg.run.seed}
    made_by = {**provenance(), "data": data,
               "learning_rate": dict(peak=system.peak_lr, global_batch=global_batch),
               **({"started_from": started_from} if started_from else {})}
    system.run_info = RunInfo(
        model=cfg.model.name, model_args=model_args(cfg.model, num_classes), classes=list(datamodule.source.classes),
        mean=tuple(datamodule.mean), std=tuple(datamodule.std), input_size=(c, h, w), ema=cfg.optim.ema_decay > 0,
        crop_pct=1.0 if datamodule.small else cfg.data.crop_pct,  # how the validation images are resized
        provenance=made_by)
    size = None
    if trainer.is_global_zero:
        atomic_write_text(run_dir / CONFIG_FILE, save_config(cfg, made_by))
        if command and resume_from is None:
            atomic_write_text(run_dir / COMMAND_FILE, command + "\n")
        size = measure_size(cfg.model.name, model, (c, h, w))
        side = model_side(cfg.model.name)
        # NOTE: a CNN's MACs grow with the image's area; a size far past the model's own is worth a word
        larger = (f" ({h * w / side ** 2:.0f}x the MACs of the model's own {side}x{side} input: data.img_size)"
                  if h * w > 4 * side ** 2 else "")
        log.info("%s: %.3fM parameters, %.1fM MACs per %dx%dx%d image%s, %d classes; %s; run folder %s",
                 cfg.model.name, size.params / 1e6, size.macs / 1e6, c, h, w, larger, num_classes,
                 _lr_text(cfg.optim, system.peak_lr, global_batch), run_dir)

    seconds = _fit(trainer, system, datamodule, resume_from, stopper, run_dir)

    # the saved model and the result
    rows = read_metrics(run_dir / METRICS_FILE)
    final = {k: float(v) for k, v in rows[-1].items() if v != ""} if rows else {}
    if trainer.is_global_zero:
        metrics = {k: final.get(k) for k in ("val_top1", "val_top5", "val_loss")}
        save_for_timm(system._eval_model(), run_dir, dataclasses.replace(system.run_info, metrics=metrics))
    return TrainResult(
        run_dir=run_dir, val_top1=final.get("val_top1"), val_top5=final.get("val_top5"),
        val_loss=final.get("val_loss"), epochs=trainer.global_step / steps_per_epoch, steps=trainer.global_step,
        seconds=seconds, train_seconds=system.progress.elapsed, images=trainer.global_step * global_batch,
        params=size.params if size else None, macs=size.macs if size else None, primary=trainer.is_global_zero,
        provenance=made_by, resumed_at_step=system.resumed_at_step)
