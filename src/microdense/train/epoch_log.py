"""The run's log for people to read, kept as it trains: a row of metrics.csv and a redrawn curves.png per epoch."""
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import lightning.pytorch as pl

from microdense.plots import pyplot, save_png
from microdense.saved.run_folder import CURVES_FILE, METRICS_FILE, read_metrics, write_metrics


def _floats(rows: Sequence[Dict[str, Any]], key: str) -> List[Optional[float]]:
    return [float(r[key]) if r.get(key) not in (None, "") else None for r in rows]


def plot_run_curves(path: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Loss and top-1 against epoch, train and val, as one PNG."""
    plt = pyplot()

    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "top1", "top-1 accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            ys = _floats(rows, f"{split}_{key}")
            pts = [(e, y) for e, y in zip(epochs, ys) if y is not None]
            if pts:
                ax.plot(*zip(*pts), style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_png(fig, path)


class EpochLog(pl.Callback):
    """After every epoch: append a row to RUN/metrics.csv and redraw RUN/curves.png (rank 0 only)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.rows = read_metrics(self.run_dir / METRICS_FILE)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        row: Dict[str, Any] = {"epoch": trainer.current_epoch + 1, "step": trainer.global_step,
                               **pl_module.epoch_summary()}
        metrics = trainer.callback_metrics
        for key in ("val_loss", "val_top1", "val_top5"):
            value = metrics.get(key.replace("_", "/", 1))
            row[key] = None if value is None else float(value)
        if not trainer.is_global_zero:
            return
        self.rows = [r for r in self.rows if int(r["epoch"]) < row["epoch"]] + [row]
        write_metrics(self.run_dir / METRICS_FILE, self.rows)
        plot_run_curves(self.run_dir / CURVES_FILE, self.rows)
