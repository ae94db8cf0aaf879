#!/usr/bin/env bash
# The group-width study's equal-time leg (src/microdense/study/studies/group-width-time.yaml): every entry and
# resnet20_cifar trained for 10 minutes each, one run at a time on every core. It measures the machine as much as the
# models: run it with nothing else running. Resumable: finished runs are skipped; an interrupted one resumes with the
# training seconds it had spent.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data/cifar10-jpeg/train}
OUT=${OUT:-docs/results/group-width-time}
mkdir -p "$OUT"
.venv/bin/microdense study run group-width-time --data imagefolder --data-dir "$DATA" --out "$OUT" --quiet \
  >> "$OUT/study.log" 2>&1
.venv/bin/microdense study report "$OUT"
