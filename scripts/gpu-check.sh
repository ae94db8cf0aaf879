#!/usr/bin/env bash
# One prepared check of every CUDA path, for a machine with one GPU (under 8 minutes there):
#   1. microdense bench --device cuda: tiny, base and resnet18_cifar in fp32, bf16 autocast and channels_last;
#   2. one short training run each in 16-mixed and bf16-mixed (synthetic data: its 3 epochs, at most 60 steps);
#   3. the ablation study's smoke form on CUDA.
# Every figure goes to one JSON file ($OUT/gpu-check.json, default gpu-check/) that names the GPU.
# On a machine without a CUDA GPU it stops at once with a message and exit status 3.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-gpu-check}
MICRODENSE=("$PY" -m microdense_cli)

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu-check: no CUDA GPU visible to torch (torch.cuda.is_available() is False); run this on a GPU machine" >&2
  exit 3
fi
if [ -e "$OUT" ]; then
  echo "gpu-check: $OUT already exists; move it away or set OUT=another-folder" >&2
  exit 1
fi
mkdir -p "$OUT"

models=()
for m in microdensenet_cifar_tiny microdensenet_cifar_base resnet18_cifar; do
  models+=("$m" "$m:amp=bf16" "$m:channels_last=true")
done
"${MICRODENSE[@]}" bench --device cuda --batch-size 128 --steps 20 --warmup 5 --latency-runs 50 \
  --models "$(IFS=,; echo "${models[*]}")" --json "$OUT/bench.json"

for precision in 16-mixed bf16-mixed; do
  "${MICRODENSE[@]}" train --model microdensenet_cifar_tiny --accelerator gpu --devices 1 --precision "$precision" \
    --max-steps 60 --out "$OUT/train-$precision" --quiet
done

"${MICRODENSE[@]}" study run ablation --smoke --out "$OUT/ablation-smoke" --quiet

"$PY" - "$OUT" <<'EOF'
import csv, json, sys, time
from pathlib import Path

import torch

out = Path(sys.argv[1])
report = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda,
              date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              bench=json.loads((out / "bench.json").read_text()), train={})
for run in sorted(out.glob("train-*")):
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    report["train"][run.name.removeprefix("train-")] = rows[-1]
report["ablation_smoke"] = [json.loads(line) for line in (out / "ablation-smoke" / "results.jsonl").open()]
(out / "gpu-check.json").write_text(json.dumps(report, indent=1))
print(f"gpu-check: every CUDA path ran on {report['gpu']}; figures in {out / 'gpu-check.json'}")
EOF
