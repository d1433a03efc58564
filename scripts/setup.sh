#!/usr/bin/env bash
# Create or refresh .venv and install ncf with its test tools, pinned by constraints.txt
# (which pins the CPU build torch==2.13.0, so no CUDA build is ever pulled).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 \
  | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import ncf, torch; print(f'ncf {ncf.__version__} with torch {torch.__version__} ready in .venv')"
