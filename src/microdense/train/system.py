"""The LightningModule: a plain timm model plus the loss, optimiser, schedule and metrics around it.

Models never import Lightning; this is the only place that joins them.
"""
import math
import time
from typing import Any, Dict, Optional

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import param_groups_weight_decay
from timm.utils import ModelEmaV3
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from microdense.train.config import TrainConfig
from microdense.train.export import RUN_INFO_KEY, RunInfo


class ClassificationSystem(pl.LightningModule):
    """Supervised image classification of `model` under the recipe in `cfg`.

    Args:
        model: any classifier returning logits (a timm model).
        cfg: the resolved training configuration.
        num_classes: the classifier's output count.
        steps_per_epoch: optimizer steps in one epoch on this process (sizes the schedule).
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, num_classes: int, steps_per_epoch: int = 1):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.num_classes = num_classes
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.mixup = None
        if cfg.mixup > 0 or cfg.cutmix > 0:
            self.mixup = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.label_smoothing,
                               num_classes=num_classes)
            self.train_loss = SoftTargetCrossEntropy()
        else:
            self.train_loss = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.ema = ModelEmaV3(model, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
        top5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=top5, average="micro")
        self.val_loss = MeanMetric()  # weighted by images, so uneven DDP shards reduce to the true mean
        self.val_per_class = MulticlassAccuracy(num_classes, top_k=1, average=None)
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self._epoch_start = 0.0
        self._epoch_images = 0
        self._epoch_loss = torch.zeros(())
        self.run_info: Optional[RunInfo] = None  # saved in every checkpoint: what eval needs to rebuild the model

    # -- forward ----------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else x

    # -- training ---------------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        # NOTE: a model's own schedule hook (DARTS ramps drop-path with it) hears how far training has come.
        if hasattr(self.model, "set_progress"):
            self.model.set_progress(self.current_epoch / max(1, self.cfg.epochs or 1))
        self._epoch_start, self._epoch_images = time.perf_counter(), 0
        self._epoch_loss = torch.zeros((), device=self.device)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        loader = self.trainer.train_dataloader
        if hasattr(loader, "mark_consumed"):
            loader.mark_consumed(batch_idx)
        # NOTE: reseed per step so dropout/drop-path draws depend on the step alone: a resumed run matches.
        torch.manual_seed(self.cfg.seed * 1_000_003 + self.global_step * 101 + self.global_rank)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x = self._prepare(x)
        target = y
        if self.mixup is not None and len(x) % 2 == 0:
            x, target = self.mixup(x, y)
        elif self.mixup is not None:
            target = F.one_hot(y, self.num_classes).float()
        if hasattr(self.model, "forward_train"):  # models with auxiliary heads expose their logits this way
            logits, aux_logits = self.model.forward_train(x)
        else:
            logits, aux_logits = self.model(x), []
        loss = self.train_loss(logits, target)
        for aux in aux_logits:
            loss = loss + self.cfg.aux_weight * self.train_loss(aux, target)
        self.train_top1(logits.detach(), y)
        self._epoch_images += len(y)
        self._epoch_loss += loss.detach() * len(y)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=len(y))
        self.log("train/top1", self.train_top1, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def epoch_summary(self) -> Dict[str, float]:
        """This epoch's training figures, reduced over every process (called at the epoch's end)."""
        elapsed = time.perf_counter() - self._epoch_start
        reduce = self.trainer.strategy.reduce
        images = reduce(torch.tensor(float(self._epoch_images), device=self.device), reduce_op="sum")
        loss_sum = reduce(self._epoch_loss.clone(), reduce_op="sum")
        return {
            "train_loss": float(loss_sum / images.clamp(min=1)),
            "train_top1": float(self.train_top1.compute()),
            "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            "img_s": float(images) / max(elapsed, 1e-9),
        }

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        if self.run_info is not None:
            checkpoint[RUN_INFO_KEY] = self.run_info.to_dict()

    # -- validation / test ------------------------------------------------------------------------------------------
    def _evaluate(self, batch: Any, prefix: str) -> None:
        x, y = batch
        logits = self._eval_model()(self._prepare(x))
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
    def configure_optimizers(self) -> Dict[str, Any]:
        cfg = self.cfg
        # NOTE: no weight decay on BN parameters and biases (timm's 1-D rule).
        groups = param_groups_weight_decay(self.model, weight_decay=cfg.weight_decay)
        opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        total = self.total_steps()
        # NOTE: a run cut short by max_steps keeps at most half of its steps for warm-up.
        warmup = min(int(round(cfg.warmup_epochs * self.steps_per_epoch)), total // 2)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(cfg, step, total, warmup, self.steps_per_epoch))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def total_steps(self) -> int:
        by_epochs = self.steps_per_epoch * max(1, self.cfg.epochs or 1)
        return max(1, min(by_epochs, self.cfg.max_steps) if self.cfg.max_steps > 0 else by_epochs)


def lr_factor(cfg: TrainConfig, step: int, total: int, warmup: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak lr at `step`.

    step: linear warm-up, then / 10 at each milestone. cosine: linear warm-up from 0, cosine to 0.
    onecycle (Smith's 1cycle as torch's OneCycleLR draws it): linear from 1/25 to 1, cosine down to 1/25,000.
    """
    if cfg.schedule == "onecycle":
        start, end = 1 / 25, 1 / 25_000
        if step < warmup:
            return start + (1 - start) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))
    if warmup and step < warmup:
        return (step + 1) / warmup
    if cfg.schedule == "step":
        epoch = step / steps_per_epoch
        return 0.1 ** sum(epoch >= m * cfg.epochs for m in cfg.milestones)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1 + math.cos(math.pi * progress))
