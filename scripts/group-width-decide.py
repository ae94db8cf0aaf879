"""Apply the group-width study's decision rule, as its study file states it, to the committed results.

    .venv/bin/python scripts/group-width-decide.py [EQUAL_EPOCHS_DIR] [EQUAL_TIME_DIR] [BENCH_JSON]

(1) At equal epochs an entry is eligible when its mean val top-1 is within max(its sample std, the best entry's
sample std, 0.3 points) of the best entry's mean; (2) among eligible entries the best mean 10-minute val top-1 wins;
(3) entries within 0.3 points on (2) are split by fp32 channels_last training img/s in the bench run. Prints every
step's figures and the winner; writes nothing.
"""
import json
import statistics
import sys
from pathlib import Path

from microdense.study.results import RESULTS_FILE, read_rows

FLOOR = 0.3  # points


def means(folder: Path) -> dict:
    """label -> (mean, sample std or 0, runs) of val top-1 in points, from a study folder's results.jsonl (none yet: empty)."""
    by_entry: dict = {}
    for row in read_rows(folder / RESULTS_FILE):
        if row.get("val_top1") is not None:  # a diverged run has no accuracy
            by_entry.setdefault(row["entry"], []).append(100 * row["val_top1"])
    return {k: (statistics.mean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)) for k, v in by_entry.items()}


def bench_rates(path: Path) -> dict:
    """label -> fp32 channels_last training img/s, matching the bench specs to the study's entries."""
    rates = {}
    for r in json.loads(path.read_text())["results"]:
        spec = r["model"]
        if "amp=" in spec or r["train_img_s"] is None:
            continue
        if "cardinality=none" in spec:
            rates["ungrouped"] = r["train_img_s"]
        elif "group_width=" in spec:
            rates["d=" + spec.split("group_width=")[1].split(":")[0]] = r["train_img_s"]
    return rates


def main(epochs_dir: str = "docs/results/group-width", time_dir: str = "docs/results/group-width-time",
         bench: str = "docs/results/group-width/bench-native.json") -> int:
    epochs, timed, rates = means(Path(epochs_dir)), means(Path(time_dir)), bench_rates(Path(bench))
    short = [k for k, (_, _, runs) in epochs.items() if runs < 2]
    if short:
        print(f"equal epochs incomplete ({', '.join(short)} have fewer than 2 seeds): no decision yet")
        return 1
    best = max(epochs, key=lambda k: epochs[k][0])
    print(f"(1) equal epochs: best {best} {epochs[best][0]:.2f} ± {epochs[best][1]:.2f} ({epochs[best][2]} runs)")
    eligible = []
    for label, (mean, std, runs) in sorted(epochs.items(), key=lambda kv: -kv[1][0]):
        margin = max(std, epochs[best][1], FLOOR)
        ok = epochs[best][0] - mean <= margin
        eligible += [label] if ok else []
        print(f"    {label:10s} {mean:6.2f} ± {std:4.2f} ({runs} runs): {epochs[best][0] - mean:5.2f} behind, "
              f"margin {margin:.2f} -> {'eligible' if ok else 'out'}")
    if len(eligible) == 1:
        print(f"winner: {eligible[0]}, the only eligible entry: steps (2) and (3) choose among eligible entries, so "
              "no equal-time or bench result can change it")
        return 0
    ranked = sorted((k for k in eligible if k in timed), key=lambda k: -timed[k][0])
    print("(2) 10 minutes: " + "; ".join(f"{k} {timed[k][0]:.2f} ± {timed[k][1]:.2f} ({timed[k][2]} runs)"
                                          for k in ranked))
    if not ranked:
        print("no eligible entry has equal-time results yet")
        return 1
    tied = [k for k in ranked if timed[ranked[0]][0] - timed[k][0] <= FLOOR]
    winner = max(tied, key=lambda k: rates.get(k, 0.0))
    if len(tied) > 1:
        print("(3) within 0.3 points: " + ", ".join(f"{k} {rates.get(k, float('nan')):.1f} img/s" for k in tied))
    print(f"winner: {winner}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
