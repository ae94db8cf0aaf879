#!/usr/bin/env bash
# The `converged` study (issue 21): tiny and resnet20, 30 epochs each, seeds 0 and 1, on the shared CIFAR-10 training
# images. Two one-thread lanes side by side, one per core, each taking resnet20's run of one seed and then tiny's of
# the other (shards I/4), so the two lanes carry equal work and the shorter runs land their rows first. Resumable:
# run it again and finished runs are skipped, an interrupted one resumes from its last checkpoint. Equal epochs, so a
# busy machine changes no accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg/train}
OUT=${OUT:-docs/results/converged}
mkdir -p "$OUT"
lane() {
  for shard in "$@"; do
    OMP_NUM_THREADS=1 nice .venv/bin/microdense study run converged --data imagefolder --data-dir "$DATA" --out "$OUT" \
      --shard "$shard/4" --quiet >> "$OUT/lane-${1%%/*}.log" 2>&1
  done
}
lane 1 2 & a=$!   # resnet20 seed 0, then tiny seed 1
lane 3 0 & b=$!   # resnet20 seed 1, then tiny seed 0
wait "$a" "$b"
.venv/bin/microdense study report "$OUT"
# Then, once, each entry's best seed ships (both did on 2026-12-03, tiny's by this command with --entries tiny):
#   .venv/bin/microdense study release "$OUT" --tag cifar10 --entries tiny --data-note "CIFAR-10's 50,000 training
#   images, re-encoded as JPEG (so pixels differ slightly from the original release) in an ImageFolder tree"
