#!/usr/bin/env bash
# Create ./.venv (once) and install debx with everything the tests and the quickstart need, CPU-only.
# Sourced by scripts/quickstart.sh and scripts/test.sh; safe to run again (it only installs what is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEBX_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="$VENV/.debx-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup.sh" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing torch (CPU build) and debx[onnx,dev]"
  # torch first, pinned: this machine has the CPU build of 2.13.0 on disk; a range would pull a CUDA build.
  python -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
  python -m pip install -q -e "$ROOT[onnx,dev]" 2>&1 | grep -v "^WARNING: Location" || true
  python -c "import torch, debx, onnxruntime; assert '+cu' not in torch.__version__" 
  echo "$want" > "$stamp"
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export GLUE_DIR="${GLUE_DIR:-$ROOT/../shared/glue}"
