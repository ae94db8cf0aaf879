"""The layout of a run folder (`microdense train --out RUN`), named once for every part that reads or writes one,
and the reading and writing of its plain files.

    RUN/config.yaml              the resolved configuration, with its provenance (`read_saved_config`)
    RUN/metrics.csv              one row per epoch (`read_metrics`, `write_metrics`), drawn in RUN/curves.png
    RUN/checkpoints/best.ckpt    the best val top-1 so far; last.ckpt: the newest, which --resume continues
    RUN/model.safetensors, RUN/config.json   the export timm reads (microdense.saved.trained_model)
    RUN/command                  the command that started the run (microdense train writes it), for its release
    RUN/previous-N/              what the folder held before a restart (run.restart), moved aside
"""
import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Sequence

import yaml

from microdense.errors import ConfigError
from microdense.io import atomic_write_text

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best.ckpt"
LAST_CHECKPOINT = "last.ckpt"
COMMAND_FILE = "command"
PREVIOUS = "previous-"
METRICS_COLUMNS = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr", "img_s",
                   "train_s")


def last_checkpoint(run_dir: Path) -> Path:
    """The checkpoint `--resume` continues from."""
    return Path(run_dir) / CHECKPOINT_DIR / LAST_CHECKPOINT


def read_metrics(path: Path) -> List[Dict[str, str]]:
    """The rows of a metrics.csv, as text (none when it does not exist)."""
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def write_metrics(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRICS_COLUMNS})
    atomic_write_text(path, buf.getvalue())


@dataclass(frozen=True)
class SavedConfig:
    """A run's config.yaml as it was saved, read without checking it: a source the run started from may be gone since
    (`microdense.train.config` is what checks a configuration)."""

    values: Dict[str, Any]

    def get(self, field: str, default: Any = None) -> Any:
        """The value of a dotted field ("optim.lr", "recipe"), or `default`."""
        section, _, name = field.partition(".")
        nested = self.values.get(section)
        if name and isinstance(nested, dict):
            return nested.get(name, default)
        # NOTE: the earlier flat layout kept the optim and run fields at the top level, under their own names (its
        # model fields had names of their own: `microdense.train.config.FLAT_LAYOUT`; none is read from a saved run)
        return self.values.get(name or section, default)


def read_saved_config(run_dir: Path) -> SavedConfig:
    """RUN/config.yaml, in either layout.

    Raises:
        FileNotFoundError: the folder has none. ConfigError: it is not YAML.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no {CONFIG_FILE}; give a run folder that microdense train wrote")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return SavedConfig(values)
