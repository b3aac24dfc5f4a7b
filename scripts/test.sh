#!/usr/bin/env bash
# The test command: installs what is missing (see setup.sh), compiles the C++/CUDA plugins and the C++ runtime
# when nvcc is present, and runs the test suite. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
. "$ROOT/scripts/setup.sh"
cd "$ROOT"
# C++ runtime dependencies (SentencePiece, utf8proc, nlohmann-json) for the plugin/runtime compile tests
need=()
for pkg in libsentencepiece-dev libutf8proc-dev nlohmann-json3-dev; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "[test] apt-get install ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
python -m pytest -q -m "not gpu and not trt" "$@"
