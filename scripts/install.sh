#!/usr/bin/env bash
# Set up .venv with everything the project needs. Safe to re-run.
#   bash scripts/install.sh            # venv + project + dev tools
#   VENV=/path bash scripts/install.sh # somewhere else
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# torch is pinned here, not in pyproject: this pair ships a torchvision that imports beside it
# (open_clip needs torchvision). On a GPU host any matching CUDA build of torch/torchvision works.
if [ "$(uname -m)" = "aarch64" ]; then TORCH="torch==2.9.1 torchvision==0.24.1"; else TORCH="torch==2.14.1 torchvision==0.29.1"; fi
quiet() { grep -v "^WARNING: Location" >&2 || true; }  # this machine's pip config names local folders that may be absent
"$VENV/bin/python" -m pip install -q --upgrade pip 2> >(quiet)
"$VENV/bin/python" -m pip install -q $TORCH 2> >(quiet)
"$VENV/bin/python" -m pip install -q -e ".[dev]" 2> >(quiet)
echo "installed into $VENV"
