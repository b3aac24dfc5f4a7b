"""Fixtures for the plugin tests: a CPU-only CMake build of the host targets and a ctypes binding of the op."""

from __future__ import annotations

import ctypes

import pytest

from plugin_helpers import Params, cmake_build


@pytest.fixture(scope="session")
def host_build(tmp_path_factory):
    """CPU-only build (no CUDA, no TensorRT): debx_attention_host and the runtime's debx_tokenize."""
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
