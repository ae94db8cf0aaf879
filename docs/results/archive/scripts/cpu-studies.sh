#!/usr/bin/env bash
# The CPU-scale studies committed under docs/results/ (README "Results"): each as two shards of one thread side by
# side, one per core (1.1-1.7x the images per second of one process on both cores). Resumable: run it again and
# finished runs are skipped, interrupted ones resume. STUDIES picks which, DATA where the CIFAR-10 images are.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg/train}
for study in ${STUDIES:-ablation baselines-cpu}; do
  out="docs/results/$study"
  mkdir -p "$out"
  pids=()
  for shard in 0 1; do
    OMP_NUM_THREADS=1 nice .venv/bin/microdense study run "$study" --data imagefolder --data-dir "$DATA" \
      --out "$out" --shard "$shard/2" --quiet >> "$out/shard-$shard.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  .venv/bin/microdense study report "$out"
done
