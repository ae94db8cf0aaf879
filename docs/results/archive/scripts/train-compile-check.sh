#!/usr/bin/env bash
# `run.compile` measured where it is used: `microdense train` of tiny on the shared CIFAR-10 images, eager against
# torch.compile, fp32 and bf16, channels_last, budget recipe, 3 epochs of 6,400 images each (50 steps of 128). The
# first epoch carries the compilation; the later epochs' rate (images over training seconds, from metrics.csv's
# steps and train_s) is the steady one. Speed: run it alone.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg/train}
OUT=${OUT:-docs/results/train-compile}
mkdir -p "$OUT"
for precision in 32-true bf16-mixed; do
  for compile in false true; do
    run="$OUT/tiny-${precision%%-*}-compile=$compile"
    [ -e "$run/metrics.csv" ] && continue
    .venv/bin/microdense train --model microdensenet_cifar_tiny --data imagefolder --data-dir "$DATA" --val-split 0.1 \
      --recipe budget --epochs 3 --precision "$precision" --set data.limit_images=6400 --set run.compile=$compile \
      --seed 0 --out "$run" --quiet 2>&1 | tee -a "$OUT/log.txt"
  done
done
.venv/bin/python - "$OUT" <<'EOF'
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
lines = ["| precision | compile | training img/s by epoch (1 / 2 / 3) | steady img/s (epochs 2-3) |",
         "| --- | --- | --- | --- |"]
for run in sorted(out.glob("tiny-*")):
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    steps, seconds = [0] + [int(r["step"]) for r in rows], [0.0] + [float(r["train_s"]) for r in rows]
    batch = 128
    rates = [(steps[i + 1] - steps[i]) * batch / (seconds[i + 1] - seconds[i]) for i in range(len(rows))]
    steady = (steps[-1] - steps[1]) * batch / (seconds[-1] - seconds[1])
    _, precision, compile = run.name.split("-")
    lines.append(f"| {precision} | {compile.removeprefix('compile=')} | {' / '.join(f'{r:.1f}' for r in rates)} | "
                 f"{steady:.1f} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
