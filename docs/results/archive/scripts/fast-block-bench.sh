#!/usr/bin/env bash
# The fast block's figures (issue 31), side by side in one run each: tiny as shipped against each of its levers
# switched off (shared batch statistics, the allocator setting) and against post-activation, resnet20 with and without
# the allocator setting (batch 128, channels_last fp32, 3 rounds round-robin, medians); then base against resnet18
# (training at batch 64, and batch-1 latency under eager PyTorch and ONNX Runtime); then one operator profile of tiny
# and resnet20. Run it alone on the machine: it measures speed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/results/fast-block}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
bench=(.venv/bin/microdense bench)
cl=channels_last=true
"${bench[@]}" --batch-size 128 --steps 10 --warmup 3 --latency-runs 10 --rounds "$ROUNDS" --json "$OUT/bench-tiny.json" \
  --models "microdensenet_cifar_tiny:$cl,microdensenet_cifar_tiny:share_batch_stats=false:$cl,\
microdensenet_cifar_tiny:retain_memory=false:$cl,microdensenet_cifar_tiny:preact=false:$cl,resnet20_cifar:$cl,\
resnet20_cifar:retain_memory=false:$cl" | tee "$OUT/bench-tiny.txt"
"${bench[@]}" --batch-size 64 --steps 3 --warmup 1 --latency-runs 50 --backend eager,onnxruntime \
  --json "$OUT/bench-base.json" --models "microdensenet_cifar_base:$cl,resnet18_cifar:$cl" | tee "$OUT/bench-base.txt"
"${bench[@]}" --batch-size 128 --steps 5 --warmup 2 --profile --json "$OUT/profile.json" \
  --models "microdensenet_cifar_tiny:$cl,resnet20_cifar:$cl" | tee "$OUT/profile.txt"
