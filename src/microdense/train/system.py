"""The LightningModule: a plain timm model plus the loss, optimiser, schedule and metrics around it.

Models never import Lightning; this is the only place that joins them.
"""
import math
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import Lookahead, param_groups_weight_decay
from timm.utils import ModelEmaV3
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from microdense.errors import TrainingDiverged
from microdense.saved.trained_model import RUN_INFO_KEY, RunInfo, nonfinite
from microdense.train.config import OptimCfg, RunCfg, peak_lr
from microdense.train.progress import RunProgress

PROGRESS_KEY = "microdense_progress"  # the checkpoint entry that keeps the training seconds across resumes


class ClassificationSystem(pl.LightningModule):
    """Supervised image classification of `model`, optimised as `optim` says, for as long as `run` says.

    Args:
        model: any classifier returning logits (a timm model).
        optim: the loss, the optimiser and its schedule.
        num_classes: the classifier's output count.
        steps_per_epoch: optimizer steps in one epoch on this process (sizes the schedule).
        run: when the run stops (sizes the schedule), its seed, memory format and validation with flips.
        global_batch: images per step on all processes, which scales the learning rate (`peak_lr`); None: `optim.lr`
            as it is.
    """

    def __init__(self, model: nn.Module, optim: OptimCfg, num_classes: int, steps_per_epoch: int = 1,
                 run: RunCfg = RunCfg(epochs=1), global_batch: Optional[int] = None):
        super().__init__()
        self.model = model
        self.optim_cfg, self.run_cfg = optim, run
        self.peak_lr = optim.lr if global_batch is None else peak_lr(optim, global_batch)
        self.num_classes = num_classes
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.mixup = None
        if optim.mixup > 0 or optim.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=optim.mixup, cutmix_alpha=optim.cutmix,
                               label_smoothing=optim.label_smoothing, num_classes=num_classes)
            self.train_loss = SoftTargetCrossEntropy()
        else:
            self.train_loss = nn.CrossEntropyLoss(label_smoothing=optim.label_smoothing)
        self.ema = ModelEmaV3(model, decay=optim.ema_decay) if optim.ema_decay > 0 else None
        forward = getattr(model, "forward_train", model.__call__)
        # NOTE: a compiled function, not a module: checkpoints, the EMA and validation keep seeing the plain model.
        self._train_forward = torch.compile(forward) if run.compile else forward
        top5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.val_loss = MeanMetric()  # weighted by images, so uneven DDP shards reduce to the true mean
        self.val_per_class = MulticlassAccuracy(num_classes, top_k=1, average=None)
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self._epoch_train_s = 0.0  # the run's training seconds when this epoch began
        self._epoch_images = 0
        self._epoch_loss = torch.zeros(())
        self.run_info: Optional[RunInfo] = None  # saved in every checkpoint: what eval needs to rebuild the model
        total = self.total_steps()
        self.progress = RunProgress(total, run.time_budget * 60 if run.time_budget else None)
        self.resumed_at_step: Optional[int] = None  # the checkpoint's step, when this process resumed a run
        self.warmup = warmup_fraction(optim, self.steps_per_epoch, total)

    # -- forward ----------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.run_cfg.channels_last else x

    # -- training ---------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._epoch_train_s, self._epoch_images = self.progress.elapsed, 0
        self._epoch_loss = torch.zeros((), device=self.device)
        self.progress.start()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        loader = self.trainer.train_dataloader
        if hasattr(loader, "mark_consumed"):
            loader.mark_consumed(batch_idx)
        # NOTE: reseed per step so dropout/drop-path draws depend on the step alone: a resumed run matches.
        torch.manual_seed(self.run_cfg.seed * 1_000_003 + self.global_step * 101 + self.global_rank)
        # NOTE: every schedule follows one progress figure (steps or training seconds, whichever is further on).
        progress = self.progress.at(self.global_step)
        factor = lr_factor(self.optim_cfg, progress, self.warmup)
        for group in self.trainer.optimizers[0].param_groups:
            group["lr"] = self.peak_lr * factor
        if hasattr(self.model, "set_progress"):  # a model's own schedule (DARTS ramps drop-path with it)
            self.model.set_progress(progress)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = self._prepare(x)
        target = y
        if self.mixup is not None and len(x) % 2 == 0:
            x, target = self.mixup(x, y)
        elif self.mixup is not None:
            target = F.one_hot(y, self.num_classes).float()
        out = self._train_forward(x)
        # NOTE: models with auxiliary heads return (logits, aux logits) from their forward_train
        logits, aux_logits = out if isinstance(out, tuple) else (out, [])
        loss = self.train_loss(logits, target)
        for aux in aux_logits:
            loss = loss + self.optim_cfg.aux_weight * self.train_loss(aux, target)
        self._stop_if_diverged(loss, "loss")  # before backward: the weights stay as they were
        self.train_top1(logits.detach(), y)
        self._epoch_images += len(y)
        self._epoch_loss += loss.detach() * len(y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def _stop_if_diverged(self, value: torch.Tensor, what: str) -> None:
        """Raise TrainingDiverged when `value` (the loss, or the gradient norm) is NaN or inf on any process."""
        bad = not bool(torch.isfinite(value.detach()).all())
        if self.trainer.world_size > 1:  # every rank stops at the same step, or the others wait forever
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            number = float(value.detach())
            raise TrainingDiverged.at(self.global_step, f"at step {self.global_step}: {what} {number:g}",
                                      self._lr(), loss=number)

    def _lr(self) -> float:
        return self.trainer.optimizers[0].param_groups[0]["lr"]

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Optional[float] = None,
                                    gradient_clip_algorithm: Optional[str] = None) -> None:
        """Lightning's norm clipping, and the norm it computes checked before the step: a NaN or inf gradient stops
        the run with the weights as they were."""
        if not gradient_clip_val:
            return
        norm = torch.nn.utils.clip_grad_norm_(self.parameters(), gradient_clip_val)
        # NOTE: under fp16's loss scaling an inf norm is routine: the scaler skips that step and lowers its scale
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            self._stop_if_diverged(norm, "gradient norm")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)
        self.progress.tick()
        if self.progress.budget_s is not None and self.trainer.world_size > 1:
            # NOTE: rank 0's clock rules, so every rank applies the same learning rate and stops at the same step.
            self.progress.load_state_dict(self.trainer.strategy.broadcast(self.progress.state_dict(), src=0))
        if self.progress.done_after(self.global_step - 1):
            # NOTE: stopping this way (not by Lightning's max_steps) lets Lightning validate the final weights.
            self.trainer.should_stop = True

    def on_validation_start(self) -> None:
        self.progress.pause()

    def on_validation_end(self) -> None:
        self.progress.start()

    def epoch_summary(self) -> Dict[str, float]:
        """This epoch's training figures, reduced over every process (called at the epoch's end, after validation).

        Its rate counts training seconds only, as the run's does: validation, checkpoints and start-up are left out.
        """
        elapsed = self.progress.elapsed - self._epoch_train_s
        reduce = self.trainer.strategy.reduce
        images = reduce(torch.tensor(float(self._epoch_images), device=self.device), reduce_op="sum")
        loss_sum = reduce(self._epoch_loss.clone(), reduce_op="sum")
        return {
            "train_loss": float(loss_sum / images.clamp(min=1)),
            "train_top1": float(self.train_top1.compute()),
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            "img_s": float(images) / max(elapsed, 1e-9),
            "train_s": self.progress.elapsed,
        }

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # NOTE: a step can overflow the weights with a finite loss; no checkpoint (best, last) may keep such weights
        bad = nonfinite(checkpoint["state_dict"])
        if bad:
            raise TrainingDiverged.at(self.global_step, f"by step {self.global_step}: {bad[0]} holds NaN or inf",
                                      self._lr())
        if self.run_info is not None:
            checkpoint[RUN_INFO_KEY] = self.run_info.to_dict()
        checkpoint[PROGRESS_KEY] = self.progress.state_dict()

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        self.resumed_at_step = checkpoint.get("global_step")
        if PROGRESS_KEY in checkpoint:
            self.progress.load_state_dict(checkpoint[PROGRESS_KEY])

    # -- validation / test ------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        x, y = batch
        model, x = self._eval_model(), self._prepare(x)
        logits = model(x)
        if self.run_cfg.val_flip:  # test-time augmentation: the mirror image's logits averaged in
            logits = (logits + model(x.flip(3))) / 2
        loss = F.cross_entropy(logits, y)
        self.val_loss.update(loss, weight=len(y))
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.val_per_class.update(logits, y)
        self.val_confusion.update(logits, y)
        self.log(f"{prefix}/loss", self.val_loss, on_epoch=True, batch_size=len(y), prog_bar=prefix == "val")
        self.log(f"{prefix}/top1", self.val_top1, on_epoch=True, batch_size=len(y), prog_bar=prefix == "val")
        self.log(f"{prefix}/top5", self.val_top5, on_epoch=True, batch_size=len(y))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_start(self) -> None:
        self.val_per_class.reset()
        self.val_confusion.reset()

    on_test_epoch_start = on_validation_epoch_start

    # -- optimisation -----------------------------------------------------------------------------------------------
    def configure_optimizers(self) -> torch.optim.Optimizer:
        # NOTE: no weight decay on BN parameters and biases (timm's 1-D rule). The learning rate of each step is set
        # in on_train_batch_start from the run's progress, so no scheduler object is needed.
        o = self.optim_cfg
        groups = param_groups_weight_decay(self.model, weight_decay=o.weight_decay)
        sgd = torch.optim.SGD(groups, lr=self.peak_lr, momentum=o.momentum, nesterov=o.nesterov)
        # NOTE: timm's Lookahead shares SGD's param_groups, so the per-step lr above reaches the fast weights.
        return Lookahead(sgd, alpha=o.lookahead_alpha, k=o.lookahead_k) if o.lookahead else sgd

    def total_steps(self) -> Optional[int]:
        """Optimizer steps the epoch and step limits allow (None: only the time budget ends the run)."""
        limits = [self.steps_per_epoch * self.run_cfg.epochs] if self.run_cfg.epochs else []
        if self.run_cfg.max_steps > 0:
            limits.append(self.run_cfg.max_steps)
        return max(1, min(limits)) if limits else None


def warmup_fraction(cfg: OptimCfg, steps_per_epoch: int, total_steps: Optional[int]) -> float:
    """The warm-up as a fraction of the run: `warmup_fraction`, or `warmup_epochs` over the run's steps. A run
    cut short keeps at most half of itself for warm-up."""
    if cfg.warmup_fraction or not cfg.warmup_epochs or not total_steps:
        return cfg.warmup_fraction
    return min(0.5, cfg.warmup_epochs * steps_per_epoch / total_steps)


def lr_factor(cfg: OptimCfg, progress: float, warmup: float) -> float:
    """Multiplier of the peak lr at `progress` (0: first step, 1: last step); `warmup` is a fraction of the run.

    step: linear warm-up from 0, then / 10 at each milestone. cosine: linear warm-up from 0, cosine to 0 at the end.
    onecycle (Smith's 1cycle as torch's OneCycleLR draws it): linear from 1/25 to 1, cosine down to 1/25,000.
    """
    if cfg.schedule == "onecycle":
        start, end = 1 / 25, 1 / 25_000
        if progress < warmup:
            return start + (1 - start) * progress / warmup
        rest = min(1.0, (progress - warmup) / (1 - warmup))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * rest))
    if progress < warmup:
        return progress / warmup
    if cfg.schedule == "step":
        return 0.1 ** sum(progress >= m for m in cfg.milestones)
    rest = min(1.0, (progress - warmup) / (1 - warmup))
    return 0.5 * (1 + math.cos(math.pi * rest))
