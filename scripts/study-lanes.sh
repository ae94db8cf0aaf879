#!/usr/bin/env bash
# Run a packaged study in two one-thread lanes (one per core, niced) from a git worktree pinned at one commit, so
# every row names that commit while work goes on in this checkout. Resumable: run it again with the same OUT and
# finished runs are skipped, an interrupted one resumes from its last checkpoint, at the commit the study began at.
#
#   scripts/study-lanes.sh STUDY OUT N "SHARDS OF LANE A" "SHARDS OF LANE B"
#   e.g. scripts/study-lanes.sh postact docs/results/postact 4 "0 3" "1 2"
#
# To stop: pkill -f study-lanes.sh (or Ctrl-C where it runs in the foreground). Each running run gets one SIGINT, on
# which it saves its last checkpoint and exits, and no lane starts another; the same command resumes.
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
PYTHON=${PYTHON:-$(pwd)/.venv/bin/python}

# Wait for process $1 to end, through the stops that interrupt `wait`; return its exit status.
await() {
  local status
  while true; do
    status=0
    wait "$1" || status=$?
    kill -0 "$1" 2> /dev/null || { wait "$1"; return; }  # ended: its own status, not the interrupted wait's
  done
}

# A lane runs its shards one after another. A stop (TERM) becomes one SIGINT to the running run, however often it
# comes, and no shard starts after it. Each run has its own session, so a terminal's Ctrl-C reaches it only through
# its lane (a second SIGINT would abort it unsaved), and gets SIGINT's default action back (a background job starts
# with SIGINT ignored).
lane() {
  local log=$1 run="" interrupted="" stopping="" status; shift
  interrupt() { [ -z "$run" ] || [ -n "$interrupted" ] || { interrupted=1; kill -INT "$run" 2> /dev/null || true; }; }
  trap 'stopping=1; interrupt' TERM
  for shard in "$@"; do
    [ -z "$stopping" ] || return 130
    interrupted=""
    (cd "$TREE" && OMP_NUM_THREADS=$THREADS PYTHONPATH="$TREE/src" exec setsid env --default-signal=INT nice \
      "$PYTHON" -m microdense_cli study run "$STUDY" --data imagefolder --data-dir "$DATA" --out "$OUT" \
      --shard "$shard/$N" --quiet) >> "$OUT/lane-$log.log" 2>&1 &
    run=$!
    [ -z "$stopping" ] || interrupt  # the stop came while the run was starting
    status=0
    await "$run" || status=$?
    run=""
    [ "$status" -eq 0 ] || return "$status"
  done
  [ -z "$stopping" ] || return 130
}
a="" b="" stopped=""
stop() {
  stopped=1
  echo "study-lanes: stopping; each run saves its last checkpoint" >&2
  for lane in $a $b; do kill -TERM "$lane" 2> /dev/null || true; done
}
trap stop INT TERM
# shellcheck disable=SC2086
lane a $LANE_A & a=$!
# shellcheck disable=SC2086
lane b $LANE_B & b=$!
[ -z "$stopped" ] || stop  # the stop came while the lanes were starting
status_a=0 status_b=0
await "$a" || status_a=$?
await "$b" || status_b=$?
if [ -n "$stopped" ] || [ "$status_a" -ne 0 ] || [ "$status_b" -ne 0 ]; then
  echo "study-lanes: lanes ended with status $status_a / $status_b (logs: $OUT/lane-a.log, lane-b.log);" \
    "the same command resumes" >&2
  exit 1
fi
trap - INT TERM
(cd "$TREE" && PYTHONPATH="$TREE/src" "$PYTHON" -m microdense_cli study report "$OUT")
