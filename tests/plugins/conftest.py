"""Fixtures for the plugin tests: a CPU-only CMake build of the host targets and a ctypes binding of the op."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plugin_helpers import PLUGINS, Params, cmake_build, require


@pytest.fixture(scope="session")
def host_build(tmp_path_factory):
    """CPU-only build (no CUDA, no TensorRT, no runtime dependencies): debx_attention_host."""
    build = tmp_path_factory.mktemp("debx-host-build")
    options = {"DEBX_BUILD_PLUGINS": "OFF", "DEBX_BUILD_TESTS": "OFF", "DEBX_BUILD_RUNTIME": "OFF"}
    return cmake_build(build, ["debx_attention_host"], options)


@pytest.fixture(scope="session")
def host_lib(host_build):
    lib = ctypes.CDLL(str(host_build / "libdebx_attention_host.so"))
    f32p = ctypes.POINTER(ctypes.c_float)
    i32p = ctypes.POINTER(ctypes.c_int32)
    lib.debx_attention_params_size.restype = ctypes.c_int32
    lib.debx_attention_forward.restype = ctypes.c_int32
    lib.debx_attention_forward.argtypes = [ctypes.POINTER(Params), f32p, f32p, f32p, f32p, f32p, i32p, f32p,
                                           ctypes.c_int32]
    lib.debx_attention_log_bucket.restype = ctypes.c_int32
    lib.debx_attention_log_bucket.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
    lib.debx_attention_relative_index.restype = ctypes.c_int32
    lib.debx_attention_relative_index.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.POINTER(Params)]
    lib.debx_attention_round.restype = None
    lib.debx_attention_round.argtypes = [f32p, ctypes.c_int64, ctypes.c_int32]
    lib.debx_attention_last_error.restype = ctypes.c_char_p
    assert lib.debx_attention_params_size() == ctypes.sizeof(Params), "Params mirror is out of date"
    return lib


@pytest.fixture(scope="session")
def tokenizer_build(tmp_path_factory):
    """CPU-only build of the runtime's tokenizer tool (needs SentencePiece, utf8proc, nlohmann/json dev packages)."""
    missing = [h for h in ("sentencepiece_processor.h", "utf8proc.h", "nlohmann/json.hpp")
               if not any((Path(d) / h).is_file() for d in ("/usr/include", "/usr/local/include"))]
    require(not missing, f"runtime dependencies missing ({', '.join(missing)}): "
                         "apt-get install libsentencepiece-dev libutf8proc-dev nlohmann-json3-dev")
    build = tmp_path_factory.mktemp("debx-tokenizer-build")
    options = {"DEBX_BUILD_PLUGINS": "OFF", "DEBX_BUILD_TESTS": "OFF", "DEBX_BUILD_RUNTIME": "ON"}
    cmake_build(build, ["debx_tokenize"], options)
    return build / "runtime" / "debx_tokenize"


@pytest.fixture(scope="session")
def plugin_build():
    """Full build through plugins/ci_compile.sh (TensorRT headers from kernel-lens, nvcc for sm_80 and sm_90).

    Built in <repo>/build/plugins (per checkout: a CMake cache is tied to its source folder), so a developer's
    second run is incremental; CI starts from scratch.
    """
    require(shutil.which("nvcc") is not None, "nvcc is not on PATH (CUDA toolkit needed to compile the plugins)")
    require(shutil.which("cmake") is not None, "cmake is not installed")
    build = PLUGINS.parent / "build" / "plugins"
    env = dict(os.environ, DEBX_BUILD_DIR=str(build), PIP=f"{sys.executable} -m pip")
    proc = subprocess.run(["bash", str(PLUGINS / "ci_compile.sh")], capture_output=True, text=True, env=env,
                          timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"plugins/ci_compile.sh failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}")
    include = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    return build, Path(include)
