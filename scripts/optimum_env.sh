#!/usr/bin/env bash
# Side venv for the Optimum baselines of `debx bench --compare optimum`.
#
# optimum-onnx 0.1.x needs transformers<4.58 and optimum~=2.1, which conflicts with the transformers of the main
# environment, so Optimum lives in its own venv and `debx bench` runs its export/optimize/quantize steps there in a
# subprocess; the resulting .onnx files are then timed in the main process with the main onnxruntime.
#
#   bash scripts/optimum_env.sh            # creates ./.venv-optimum (or $DEBX_OPTIMUM_VENV), idempotent
#   DEBX_OPTIMUM_VENV=/path bash scripts/optimum_env.sh
#
# debx finds the venv through $DEBX_OPTIMUM_VENV, else ./.venv-optimum next to the repo root.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DEBX_OPTIMUM_VENV:-$ROOT/.venv-optimum}"
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x "$VENV/bin/python" ]; then
  echo "[optimum-env] creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.debx-optimum-installed"
want="$(sha256sum "$ROOT/scripts/optimum_env.sh" | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "[optimum-env] up to date: $VENV"
  exit 0
fi
# torch first and pinned to the CPU build, so that nothing below pulls a CUDA wheel
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q "optimum-onnx[onnxruntime]==0.1.0" "transformers<4.58" sentencepiece
"$VENV/bin/python" - <<'PY'
import torch, transformers, optimum.exporters.onnx, optimum.onnxruntime  # noqa: F401
assert "+cu" not in torch.__version__, torch.__version__
print(f"[optimum-env] torch {torch.__version__}, transformers {transformers.__version__}")
PY
echo "$want" > "$stamp"
echo "[optimum-env] ready: $VENV"
