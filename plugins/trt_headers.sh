#!/usr/bin/env bash
# The TensorRT 10 headers (NvInferRuntime.h, ...) from the kernel-lens sdist on PyPI, unpacked into a cache folder,
# never into the repository. Prints the include folder on the last line ("TENSORRT_INCLUDE_DIR=..."). Used by
# ci_compile.sh and by the engine-library tests; needs pip and tar, no CUDA.
#
#   bash plugins/trt_headers.sh        # headers cached in $DEBX_CACHE (default ~/.cache/debx)
set -euo pipefail

CACHE="${DEBX_CACHE:-$HOME/.cache/debx}"
VERSION="2.0.1"
HEADERS_ROOT="$CACHE/kernel-lens-$VERSION"
TRT_INCLUDE="$HEADERS_ROOT/kernel_lens/include/tensorrt"
PIP="${PIP:-python3 -m pip}"

fail() { echo "trt_headers: error: $*" >&2; exit 1; }

if [ ! -f "$TRT_INCLUDE/NvInferRuntime.h" ]; then
  mkdir -p "$CACHE"
  download="$(mktemp -d "$CACHE/download.XXXXXX")"
  trap 'rm -rf "$download"' EXIT
  echo "trt_headers: downloading kernel-lens==$VERSION (TensorRT 10 headers)"
  $PIP download --quiet --no-deps --no-binary :all: "kernel-lens==$VERSION" -d "$download" \
    || fail "pip download kernel-lens==$VERSION failed"
  sdist="$(ls "$download"/kernel_lens-"$VERSION".tar.gz 2>/dev/null || true)"
  [ -n "$sdist" ] || fail "kernel-lens sdist not found after download"
  unpack="$(mktemp -d "$CACHE/unpack.XXXXXX")"
  tar -xzf "$sdist" -C "$unpack" --strip-components=1
  rm -rf "$HEADERS_ROOT"
  mv "$unpack" "$HEADERS_ROOT" # atomic: the folder appears complete or not at all
  [ -f "$TRT_INCLUDE/NvInferRuntime.h" ] || fail "NvInferRuntime.h not in the kernel-lens sdist"
fi
grep -q "define TRT_MAJOR_ENTERPRISE 10" "$TRT_INCLUDE/NvInferVersion.h" || fail "expected TensorRT 10 headers"
echo "TENSORRT_INCLUDE_DIR=$TRT_INCLUDE"
