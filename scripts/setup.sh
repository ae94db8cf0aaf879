#!/usr/bin/env bash
# Create .venv in the repository root and install microdense into it, with its test tools, the ONNX extra and ninja
# for the fused CPU kernel (the fast extra).
# The same script serves the README's first command and CI, so a missing install step shows up in both.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# NOTE: the project's machines carry this torch build on disk (pip is capped at 2.14.1 there);
# set TORCH_SPEC to install another build, e.g. TORCH_SPEC="torch torchvision" for the latest CUDA wheels.
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q $TORCH_SPEC
.venv/bin/python -m pip install -q -e ".[test,export,fast]"
# the fused CPU kernel is compiled once here (about a minute) rather than at the first training step; without a C++ compiler
# this warns, naming the fix, and training takes the eager path (microdense/layers/fused.py)
.venv/bin/python -c "from microdense.layers.fused import fused_kernels; fused_kernels()"
echo "microdense installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
