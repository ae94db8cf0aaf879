"""The layout of a run folder (`microdense train --out RUN`), named once for every part that reads or writes one.

    RUN/config.yaml              the resolved configuration, with its provenance
    RUN/metrics.csv              one row per epoch (microdense.train.report), drawn in RUN/curves.png
    RUN/checkpoints/best.ckpt    the best val top-1 so far; last.ckpt: the newest, which --resume continues
    RUN/model.safetensors, RUN/config.json   the export timm reads (microdense.train.saved_model)
    RUN/command                  the command that started the run (microdense train writes it), for its release
    RUN/previous-N/              what the folder held before a restart (run.restart), moved aside
"""
from pathlib import Path

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
COMMAND_FILE = "command"
PREVIOUS = "previous-"


def last_checkpoint(run_dir: Path) -> Path:
    """The checkpoint `--resume` continues from."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT
