#!/usr/bin/env bash
# Run a packaged study in two one-thread lanes (one per core, niced) from a git worktree pinned at one commit, so
# every row names that commit while work goes on in this checkout. Resumable: run it again with the same OUT and
# finished runs are skipped, an interrupted one resumes from its last checkpoint, at the commit the study began at.
#
#   scripts/study-lanes.sh STUDY OUT N "SHARDS OF LANE A" "SHARDS OF LANE B"
#   e.g. scripts/study-lanes.sh postact docs/results/postact 4 "0 3" "1 2"
#
# To stop: pkill -f study-lanes.sh (the lanes' loops first, or they start their next shard), then
# pkill -INT -f 'microdense_cli study run' (each run saves its last checkpoint and exits).
# Shard I/N is run I of the study's plan (entries in file order, seed by seed); give each lane equal work.
# Equal epochs only: lanes share the machine, so their timings are not benchmarks. A study of equal time runs in one
# lane with every core and nothing else running: THREADS=2 scripts/study-lanes.sh STUDY OUT 1 "0" ""
set -euo pipefail
cd "$(dirname "$0")/.."
STUDY=$1 OUT=$2 N=$3 LANE_A=$4 LANE_B=$5
DATA=$(realpath "${DATA:-../shared/data/cifar10-jpeg/train}")
THREADS=${THREADS:-1}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
[ -s "$OUT/lanes-commit" ] || git rev-parse HEAD > "$OUT/lanes-commit"
COMMIT=$(cat "$OUT/lanes-commit")
TREE=$(cd .. && pwd)/worktrees/$STUDY-${COMMIT:0:7}
[ -d "$TREE" ] || git worktree add --detach "$TREE" "$COMMIT" > /dev/null
PYTHON=$(pwd)/.venv/bin/python
lane() {
  local log=$1; shift
  for shard in "$@"; do
    (cd "$TREE" && OMP_NUM_THREADS=$THREADS PYTHONPATH="$TREE/src" nice "$PYTHON" -m microdense_cli study run "$STUDY" \
      --data imagefolder --data-dir "$DATA" --out "$OUT" --shard "$shard/$N" --quiet) \
      >> "$OUT/lane-$log.log" 2>&1
  done
}
# shellcheck disable=SC2086
lane a $LANE_A & a=$!
# shellcheck disable=SC2086
lane b $LANE_B & b=$!
wait "$a" "$b"
(cd "$TREE" && PYTHONPATH="$TREE/src" "$PYTHON" -m microdense_cli study report "$OUT")
