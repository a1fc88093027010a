#!/usr/bin/env bash
# The test command (README and CI run exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${VENV:-.venv}/bin/python" -m pytest -q -n 2 --dist loadfile --durations=12 "$@"
