#!/usr/bin/env bash
# Time to accuracy (issue 8): `microdense train --recipe budget --time-budget MINUTES` on the shared CIFAR-10 training
# images, 10% held out, for the same-size plain ResNet and the Micro-Dense Nets small enough to train in the budget,
# in the recipe's fp32, and tiny and resnet20 once more under bf16 autocast (opt-in, not the recipe's).
# Run it on an otherwise idle machine: a time budget measures the machine as much as the model.
# Resumable: finished runs are skipped; an interrupted one resumes with the training seconds it had spent.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg/train}
OUT=${OUT:-docs/results/time-to-accuracy}
MINUTES=${MINUTES:-10}
RUNS=${RUNS:-resnet20_cifar:32-true microdensenet_cifar_tiny:32-true microdensenet_cifar_small:32-true microdensenet_cifar_tiny:bf16-mixed resnet20_cifar:bf16-mixed}
mkdir -p "$OUT"
for spec in $RUNS; do
  model=${spec%%:*} precision=${spec#*:}
  run="$OUT/runs/$model"; [ "$precision" = 32-true ] || run="$run-$precision"
  if [ -f "$run/model.safetensors" ]; then continue; fi
  resume=(); if [ -f "$run/checkpoints/last.ckpt" ]; then resume=(--resume); fi
  .venv/bin/microdense train --model "$model" --recipe budget --time-budget "$MINUTES" --precision "$precision" \
    --data imagefolder --data-dir "$DATA" --val-split 0.1 --seed 0 --accelerator cpu --out "$run" "${resume[@]}" \
    --quiet | tee -a "$OUT/log.txt"
done
