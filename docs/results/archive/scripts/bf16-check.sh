#!/usr/bin/env bash
# Does bf16 autocast reach fp32's val top-1 at an equal number of steps? Two seeds each, the budget recipe, two
# epochs of the shared CIFAR-10 training images; resumable (finished runs are skipped, killed ones resume).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg/train}
OUT=${OUT:-docs/results/bf16-vs-fp32}
MODEL=${MODEL:-microdensenet_cifar_tiny}
for seed in 0 1; do
  for precision in 32-true bf16-mixed; do
    run="$OUT/runs/$MODEL-$precision-seed$seed"
    if [ -f "$run/model.safetensors" ]; then continue; fi
    resume=(); if [ -f "$run/checkpoints/last.ckpt" ]; then resume=(--resume); fi
    .venv/bin/microdense train --model "$MODEL" --recipe budget --epochs 2 --data imagefolder --data-dir "$DATA" \
      --val-split 0.1 --precision "$precision" --seed "$seed" --accelerator cpu --out "$run" "${resume[@]}" --quiet \
      | tee -a "$OUT/log.txt"
  done
done
