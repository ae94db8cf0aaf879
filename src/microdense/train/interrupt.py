"""Ctrl-C during training: finish the step, save last.ckpt, stop; the run then resumes where it stopped."""
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl

from microdense.saved.run_folder import last_checkpoint

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped on Ctrl-C after saving `checkpoint`; `--resume` continues from it."""

    def __init__(self, run_dir: Path, checkpoint: Path, step: int):
        super().__init__(f"training of {run_dir} interrupted at step {step}; {checkpoint} saved")
        self.run_dir, self.checkpoint, self.step = run_dir, checkpoint, step


class StopOnInterrupt(pl.Callback):
    """The first SIGINT asks training to stop after the current step, save the run's last checkpoint and raise
    `TrainingInterrupted` out of `Trainer.fit`; a second one aborts at once (Python's KeyboardInterrupt). Every rank
    stops at the same step: the request is reduced across them.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.checkpoint = last_checkpoint(run_dir)
        self.requested = False
        self._previous: Optional[Any] = None

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.requested:
            self._restore()
            raise KeyboardInterrupt
        self.requested = True
        log.warning("\nstopping after this step and saving %s (Ctrl-C again to abort at once)", self.checkpoint)

    def _restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            trainer.save_checkpoint(self.checkpoint)
            raise TrainingInterrupted(self.run_dir, self.checkpoint, trainer.global_step)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._restore()
