"""Apply the postact study's decision rule, as its study file states it, to the committed results.

    .venv/bin/python scripts/postact-decide.py [EQUAL_EPOCHS_DIR] [EQUAL_TIME_DIR] [BENCH_JSON]

(1) Per epoch: with d_s = post minus pre val top-1 at seed s, post-activation is eligible when mean(d) >=
-max(sd(d), 0.3 points); otherwise pre-activation stays. (2) Per time: an eligible post-activation wins when its mean
10-minute val top-1 exceeds pre-activation's by more than 0.3 points, and loses when it trails by more than 0.3;
(3) within 0.3 points the faster in the bench run (fp32 channels_last training img/s) wins. Prints every step's
figures and the outcome; writes nothing.
"""
import json
import statistics
import sys
from pathlib import Path

from microdense.study.results import RESULTS_FILE, read_rows

FLOOR = 0.3  # points


def top1_by_seed(folder: Path) -> dict:
    """label -> {seed: val top-1 in points} from a study folder's results.jsonl (diverged runs left out)."""
    out: dict = {}
    for r in read_rows(folder / RESULTS_FILE):
        if r.get("val_top1") is not None:
            out.setdefault(r["entry"], {})[r["seed"]] = 100 * r["val_top1"]
    return out


def main(epochs_dir: str = "docs/results/postact", time_dir: str = "docs/results/postact-time",
         bench: str = "docs/results/postact/bench-native.json") -> int:
    epochs = top1_by_seed(Path(epochs_dir))
    seeds = sorted(set(epochs.get("pre", {})) & set(epochs.get("post", {})))
    if len(seeds) < 2:
        print(f"equal epochs incomplete (seeds with both entries: {seeds}): no decision yet")
        return 1
    d = [epochs["post"][s] - epochs["pre"][s] for s in seeds]
    m, sd = statistics.mean(d), statistics.stdev(d)
    margin = max(sd, FLOOR)
    print(f"(1) equal epochs: post - pre by seed {' / '.join(f'{x:+.2f}' for x in d)}; mean {m:+.2f}, sd {sd:.2f}; "
          f"eligible when mean >= -{margin:.2f}")
    if m < -margin:
        print("outcome: pre-activation stays (post-activation is worse per epoch than two seeds can resolve)")
        return 0
    timed = top1_by_seed(Path(time_dir))
    pre, post = (statistics.mean(timed[k].values()) for k in ("pre", "post"))
    print(f"(2) 10 minutes: pre {pre:.2f}, post {post:.2f} (post - pre {post - pre:+.2f}; decides beyond ±{FLOOR})")
    if post - pre > FLOOR:
        print("outcome: post-activation becomes the default")
    elif pre - post > FLOOR:
        print("outcome: pre-activation stays (post-activation trails at equal time)")
    else:
        rates = {r["model"]: r["train_img_s"] for r in json.loads(Path(bench).read_text())["results"]}
        fast_pre = rates["microdensenet_cifar_tiny:channels_last=true"]
        fast_post = rates["microdensenet_cifar_tiny:preact=false:channels_last=true"]
        print(f"(3) bench, fp32 channels_last: pre {fast_pre:.1f}, post {fast_post:.1f} img/s")
        print("outcome: " + ("post-activation becomes the default" if fast_post > fast_pre else "pre-activation stays"))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
