#!/usr/bin/env bash
# The test command: installs what is missing (see setup.sh), compiles the C++/CUDA plugins and the C++ runtime
# when nvcc is present, and runs the test suite. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=setup.sh
. "$ROOT/scripts/setup.sh"
cd "$ROOT"
python -m pytest -q -m "not gpu and not trt" "$@"
