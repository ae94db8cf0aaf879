#!/usr/bin/env bash
# The postact study's speed leg (src/microdense/study/studies/postact.yaml): pre- and post-activation tiny, the
# reference path without shared statistics, and resnet20_cifar, trained side by side by `microdense bench` at batch
# 128, channels_last, fp32, each model measured in 3 rounds round-robin (medians). Then the same under oneDNN's AVX2
# kernels (ONEDNN_MAX_CPU_ISA=AVX2) where the CPU has AVX-512, and in bf16 where it has native bf16 (avx512_bf16 or
# AMX): on an AVX2-only CPU bf16 is emulated and runs several times slower than fp32, so it says nothing there.
# Run it alone on the machine: it measures speed.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-docs/results/postact}
ROUNDS=${ROUNDS:-3}
mkdir -p "$OUT"
models() {  # the entries, with the run options given ($1)
  local m
  for m in microdensenet_cifar_tiny microdensenet_cifar_tiny:preact=false \
           microdensenet_cifar_tiny:share_batch_stats=false resnet20_cifar; do
    printf '%s:%s,' "$m" "$1"
  done
}
bench=(.venv/bin/microdense bench --batch-size 128 --steps 10 --warmup 3 --latency-runs 10 --rounds "$ROUNDS")
"${bench[@]}" --models "$(models channels_last=true)" --json "$OUT/bench-native.json" | tee "$OUT/bench-native.txt"
if grep -q avx512f /proc/cpuinfo; then
  ONEDNN_MAX_CPU_ISA=AVX2 "${bench[@]}" --models "$(models channels_last=true)" --json "$OUT/bench-avx2.json" \
    | tee "$OUT/bench-avx2.txt"
fi
if grep -q -E 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  "${bench[@]}" --models "$(models channels_last=true:amp=bf16)" --json "$OUT/bench-bf16.json" \
    | tee "$OUT/bench-bf16.txt"
fi
