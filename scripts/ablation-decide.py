"""Apply the ablation study's decision rule, as its study file states it, to the committed results.

    .venv/bin/python scripts/ablation-decide.py [STUDY_DIR]

For each variant v, d_s is the default's val top-1 minus v's at seed s (positive: the paper's choice is better), m
their mean and sd their sample std. The claim v tests is SUPPORTED when every d_s > 0 and m > max(sd, 0.3 points),
CONTRADICTED when every d_s < 0 and -m > max(sd, 0.3 points), otherwise NOT SETTLED at this size. A variant with
fewer than two seeds paired with the default has no verdict yet. Prints each variant's figures; writes nothing.
"""
import statistics
import sys
from pathlib import Path

from microdense.study.results import RESULTS_FILE, read_rows

FLOOR = 0.3  # points
CLAIMS = {"residual": "micro-dense aggregation", "constant": "pyramidal widths", "fixed": "adaptive cardinality",
          "dense": "the block shortcut: global residual learning"}


def verdict(d: list) -> str:
    m, bar = statistics.mean(d), max(statistics.stdev(d), FLOOR)
    if all(x > 0 for x in d) and m > bar:
        return "SUPPORTED"
    if all(x < 0 for x in d) and -m > bar:
        return "CONTRADICTED"
    return "NOT SETTLED at this size"


def main(folder: str = "docs/results/ablation") -> int:
    top1 = {(r["entry"], r["seed"]): 100 * r["val_top1"] for r in read_rows(Path(folder) / RESULTS_FILE)
            if r.get("val_top1") is not None}  # diverged runs have none
    for variant, claim in CLAIMS.items():
        seeds = sorted(s for entry, s in top1 if entry == variant and ("default", s) in top1)
        d = [top1["default", s] - top1[variant, s] for s in seeds]
        if len(d) < 2:
            print(f"{variant} ({claim}): {len(d)} seed(s) paired with the default; no verdict yet")
            continue
        print(f"{variant} ({claim}): default - {variant} by seed {' / '.join(f'{x:+.2f}' for x in d)}; "
              f"mean {statistics.mean(d):+.2f}, sd {statistics.stdev(d):.2f}, "
              f"bar max(sd, {FLOOR}) = {max(statistics.stdev(d), FLOOR):.2f} -> {verdict(d)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
