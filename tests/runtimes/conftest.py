"""The CMake build folder of the native op library (plugins/CMakeLists.txt, target debx_ort_ops) as debx's on-demand
build configures it (native_ops.cmake_configure), once per session: its compile_commands.json and Ninja's files say
what the build compiles, with which flags, in which order; `cmake_tree` builds it too (Ninja's dependency log then
says which files the build read)."""

from __future__ import annotations

import pytest

from debx.errors import MissingDependencyError
from debx.runtimes import native_ops


@pytest.fixture(scope="session")
def cmake_configured(tmp_path_factory):
    """(build folder, source folder), configured; skipped where CMake or a compiler is missing."""
    try:
        tools = native_ops.toolchain()
    except MissingDependencyError as e:
        pytest.skip(str(e))
    source = native_ops.source_root()
    build_dir = tmp_path_factory.mktemp("cmake-ort-ops")
    native_ops.cmake_configure(tools, source, build_dir)
    return build_dir, source, tools


@pytest.fixture(scope="session")
def cmake_tree(cmake_configured):
    """(build folder, source folder) after native_ops.cmake_build (a full build: tests using it are slow)."""
    build_dir, source, tools = cmake_configured
    native_ops.cmake_build(tools, source, build_dir)
    return build_dir, source
