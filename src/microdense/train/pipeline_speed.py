"""The training pipeline's speed beside the bare step's (`microdense bench --pipeline`).

Each model is measured in a process of its own, as `microdense.bench.worker` measures it, and then trained for the
same steps through `microdense train`'s machinery (Lightning, the data module's fast small-image path on synthetic
data): the difference is the pipeline's overhead. Run as `python -m microdense.train.pipeline_speed '<json options>'`;
the bench's own worker knows nothing of training, so this one lives with the trainer.
"""
import sys
import time
from typing import Any, Dict

import lightning.pytorch as pl
import torch

from microdense.bench.machine import sync
from microdense.bench.worker import main, measure
from microdense.data.config import DataCfg
from microdense.train.config import OptimCfg, RunCfg
from microdense.train.datamodule import ImageDataModule
from microdense.train.quiet import third_party_noise_silenced
from microdense.train.system import ClassificationSystem


def measure_pipeline(model: torch.nn.Module, batch_size: int, steps: int, warmup: int, dev: torch.device,
                     options: Dict[str, Any], bare_img_s: float) -> Dict[str, Any]:
    """Training img/s of the same model through `microdense train`'s machinery (Lightning, the data module's
    fast small-image path on synthetic data), for the pipeline's overhead against the bare step."""

    class StepTimer(pl.Callback):
        def __init__(self):
            self.start = None
            self.elapsed = 0.0

        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == warmup:
                sync(dev)
                self.start = time.perf_counter()

        def on_train_end(self, trainer, *args):
            sync(dev)
            self.elapsed = time.perf_counter() - self.start

    data = DataCfg(name="synthetic", batch_size=batch_size, workers=0)
    datamodule = ImageDataModule(data)
    datamodule.setup("fit")
    run = RunCfg(epochs=1, channels_last=bool(options.get("channels_last")))
    system = ClassificationSystem(model, OptimCfg(), model.num_classes, steps_per_epoch=warmup + steps, run=run)
    timer = StepTimer()
    precision = {"bf16": "bf16-mixed", "fp16": "16-mixed"}.get(options.get("amp"), "32-true")  # as the bare step's
    with third_party_noise_silenced():
        trainer = pl.Trainer(accelerator=dev.type, devices=1, max_steps=warmup + steps, precision=precision,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, callbacks=[timer],
                             use_distributed_sampler=False)
        trainer.fit(system, datamodule=datamodule)
    pipeline_img_s = steps * batch_size / timer.elapsed
    return {"pipeline_img_s": pipeline_img_s, "pipeline_overhead": bare_img_s / pipeline_img_s - 1}


def measure_with_pipeline(**options: Any) -> Dict[str, Any]:
    """`microdense.bench.worker.measure`, then the same model through the training pipeline."""
    return measure(**options, after=measure_pipeline)


if __name__ == "__main__":
    sys.exit(main(measure_with_pipeline))
