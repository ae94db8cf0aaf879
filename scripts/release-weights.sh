#!/usr/bin/env bash
# Release a finished run's weights into the package: src/microdense/weights/<model>.<TAG>.safetensors and its model
# card <model>.<TAG>.md (README "Released weights"). COMMAND is the command that reproduced the run, recorded in both.
#   bash scripts/release-weights.sh RUN TAG "COMMAND"       e.g. ... runs/tiny-c10 cifar10 "microdense train ..."
# OUT=DIR writes the two files there instead; PY picks the interpreter (default the checkout's .venv/bin/python).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)  # NOTE: no cd: RUN and OUT are read from where the script is called
if [ $# -ne 3 ]; then
  echo "usage: bash scripts/release-weights.sh RUN TAG \"COMMAND\"" >&2
  exit 2
fi
PY=${PY:-$ROOT/.venv/bin/python}
"$PY" - "$1" "$2" "$3" "${OUT:-}" <<'PYTHON'
import sys

from microdense.deploy.release import release_weights
from microdense.errors import MicrodenseError

run, tag, command, out = sys.argv[1:]
try:
    path = release_weights(run, tag, out_dir=out or None, command=command)
except (OSError, MicrodenseError) as e:  # the project's one-line errors (a bad run folder, tag or command)
    sys.exit(f"release-weights: error: {e}")
print(f"released {path} and {path.with_suffix('.md')}")
PYTHON
