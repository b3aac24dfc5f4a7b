#!/usr/bin/env bash
# Compile everything under plugins/ the way CI does: the TensorRT plugin library (CUDA kernels for sm_80 and sm_90),
# the C++ unit tests of the plugin classes, the CPU build of the op and the C++ runtime (tokenizer tool + engine
# library; debx_serve is linked only where libnvinfer is). No GPU is needed: nothing here launches a kernel.
#
# TensorRT 10 headers come from the kernel-lens sdist on PyPI; they are unpacked into a cache folder, never into the
# repository.
#
#   bash plugins/ci_compile.sh                 # build into <repo>/build/plugins (headers cached in $DEBX_CACHE)
#   DEBX_BUILD_DIR=/tmp/b bash plugins/ci_compile.sh
#
# Needs: cmake, a C++17 compiler, nvcc (CUDA 12+), pip, and for the runtime
# libsentencepiece-dev libutf8proc-dev nlohmann-json3-dev (Debian package names).
# Prints the TensorRT include folder on the last line ("TENSORRT_INCLUDE_DIR=...").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="${DEBX_BUILD_DIR:-$(dirname "$HERE")/build/plugins}"  # per checkout: a CMake cache is tied to its source folder
ARCHS="${DEBX_CUDA_ARCHITECTURES:-80;90}"
JOBS="${DEBX_JOBS:-2}"

fail() { echo "ci_compile: error: $*" >&2; exit 1; }

command -v cmake >/dev/null || fail "cmake not found"
command -v nvcc >/dev/null || fail "nvcc not found (install the CUDA toolkit, or put it on PATH)"

# ---- TensorRT headers (kernel-lens sdist, cached; trt_headers.sh) ------------------------------------------------
TRT_INCLUDE="$(bash "$HERE/trt_headers.sh" | tail -n1)" || fail "TensorRT headers not available"
TRT_INCLUDE="${TRT_INCLUDE#TENSORRT_INCLUDE_DIR=}"

# ---- configure + build --------------------------------------------------------------------------------------------
echo "ci_compile: configuring $BUILD (CUDA architectures $ARCHS)"
mkdir -p "$BUILD"
cmake -S "$HERE" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DTENSORRT_INCLUDE_DIR="$TRT_INCLUDE" -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" >"$BUILD/configure.log" 2>&1 \
  || { cat "$BUILD/configure.log"; fail "cmake configure failed"; }
echo "ci_compile: building with -j$JOBS"
cmake --build "$BUILD" -j"$JOBS"

# ---- what was built -------------------------------------------------------------------------------------------------
test -f "$BUILD/libdebx_plugins.so" || fail "libdebx_plugins.so was not built"
test -x "$BUILD/debx_plugin_tests" || fail "debx_plugin_tests was not built"
test -x "$BUILD/runtime/debx_tokenize" || fail "debx_tokenize was not built"
test -f "$BUILD/runtime/libdebx_engine.a" || fail "libdebx_engine.a (the engine library) was not built"
# Every requested architecture has device code in the library (cuobjdump when the toolkit has it, else the
# fatbinary's embedded target names).
for arch in ${ARCHS//;/ }; do
  if command -v cuobjdump >/dev/null; then
    cuobjdump --list-elf "$BUILD/libdebx_plugins.so" | grep "sm_$arch" >/dev/null || fail "libdebx_plugins.so has no sm_$arch code"
  else
    strings "$BUILD/libdebx_plugins.so" | grep "sm_$arch" >/dev/null || fail "libdebx_plugins.so has no sm_$arch code"
  fi
done
echo "ci_compile: built $BUILD/libdebx_plugins.so, debx_plugin_tests, libdebx_attention_host.so, runtime/debx_tokenize, runtime/libdebx_engine.a"
echo "TENSORRT_INCLUDE_DIR=$TRT_INCLUDE"
