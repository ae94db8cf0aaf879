#!/usr/bin/env bash
# The ablation study's cost leg (src/microdense/study/studies/ablation.yaml): every entry at the width the study
# resolved (read from its study.yaml) and resnet20_cifar, trained side by side by `microdense bench` at batch 128,
# fp32 channels_last, each measured in 3 rounds round-robin (medians): training img/s, efficiency, peak memory.
# Run it alone on the machine: it measures speed.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=${STUDY:-docs/results/ablation}
ROUNDS=${ROUNDS:-3}
specs=$(.venv/bin/python - "$STUDY/study.yaml" <<'PY'
import sys, yaml
study = yaml.safe_load(open(sys.argv[1]))
specs = [":".join([e["model"], *(f"{k}={v}" for k, v in sorted(e["kwargs"].items()))]) for e in study["entries"]]
print(",".join(f"{s}:channels_last=true" for s in specs + ["resnet20_cifar"]))
PY
)
.venv/bin/microdense bench --models "$specs" --batch-size 128 --steps 10 --warmup 3 --latency-runs 10 \
  --rounds "$ROUNDS" --json "$STUDY/bench.json" | tee "$STUDY/bench.txt"
