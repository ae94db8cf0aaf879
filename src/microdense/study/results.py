"""DIR/results.jsonl: one JSON row per finished run, only ever appended to.

Each row is appended under an exclusive lock and synced: rows from shards sharing DIR never interleave, a write that
fails (a full disk) is cut back off so the file ends with its last whole row, a process killed mid-write leaves at most
one torn last line (which `read_rows` skips with a warning), and no row once written is rewritten. Shards writing to
separate folders merge by `cat`. Every table and rule quotes an entry's runs as their `Spread` over seeds.
"""
import fcntl
import json
import logging
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from microdense.errors import DataError

log = logging.getLogger(__name__)
RESULTS_FILE = "results.jsonl"


def append_row(path: Path, row: Dict[str, Any]) -> None:
    line = (json.dumps(row, sort_keys=False) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        # NOTE: a torn last line (a crash mid-write) would swallow this row: start on a line of our own.
        size = os.fstat(fd).st_size
        if size and not _ends_with_newline(path):
            line = b"\n" + line
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # no half row: the file ends where the last whole row did
            raise
    finally:
        os.close(fd)  # releases the lock


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_rows(path: Path) -> List[Dict[str, Any]]:
    """Every complete row of `path` (none if it does not exist); a line that is not JSON is skipped, with a warning.

    Raises:
        DataError: two rows of one entry and seed (shard folders merged twice by `cat`?): every table and rule would
            count one of them, or both.
    """
    if not path.exists():
        return []
    rows, lines = [], {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not a complete row (a write cut short?); skipped", path, n)
            continue
        key = (row.get("entry"), row.get("seed"))
        if key in lines and key[0] is not None:
            raise DataError(f"{path} holds two rows of {key[0]} at seed {key[1]} (lines {lines[key]} and {n}); "
                            "keep the one its run folder holds and delete the other")
        lines[key] = n
        rows.append(row)
    return rows


@dataclass(frozen=True)
class Spread:
    """One entry's runs over seeds: the mean of their figures and its sample standard deviation."""

    mean: float
    sd: float  # 0.0 for a single run, which shows no spread
    runs: int


def spread(values: Sequence[float]) -> Spread:
    """`values` (one figure per run, at least one) as their Spread. NOTE: `statistics.mean` is exact (correctly
    rounded), so a rule's comparison never turns on the order the figures are summed in."""
    return Spread(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def spreads(figures: Mapping[Tuple[str, int], float]) -> Dict[str, Spread]:
    """(entry label, seed) -> one run's figure, as each entry's Spread over its seeds, labels in sorted order."""
    by_entry: Dict[str, List[float]] = {}
    for (label, _), value in sorted(figures.items()):
        by_entry.setdefault(label, []).append(value)
    return {label: spread(values) for label, values in by_entry.items()}
