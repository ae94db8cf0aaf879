"""The one way the project draws and writes figures: headless, and atomically, so a crash leaves no half a PNG."""
from pathlib import Path
from typing import Any

from microdense.io import atomic_open


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); imported on first use, off the start-up path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_png(fig: Any, path: Path) -> None:
    """Write `fig` to `path` as a PNG in one atomic step, then free it."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    pyplot().close(fig)
