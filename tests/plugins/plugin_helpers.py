"""Helpers for the plugin tests: CMake builds, skip-or-fail rules, the ctypes mirror of the op parameters.

The CPU targets (debx_attention_host, debx_tokenize) need only cmake and a C++ compiler. Under CI=true a missing
tool is a failure, never a skip: the point of these tests is that CI proves the C++ code.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGINS = ROOT / "plugins"
SHARED = ROOT.parent / "shared"
SPM = SHARED / "tokenizers" / "deberta-v3" / "spm.model"
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip on a developer machine, fail under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def cache_dir() -> Path:
    return Path(os.environ.get("DEBX_CACHE", Path.home() / ".cache" / "debx"))


def run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a build step; on failure show its output in the test report."""
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def cmake_build(build_dir: Path, targets: list[str], options: dict[str, str]) -> Path:
    require(shutil.which("cmake") is not None, "cmake is not installed")
    require(shutil.which("c++") is not None or shutil.which("g++") is not None, "no C++ compiler")
    args = ["cmake", "-S", str(PLUGINS), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release"]
    args += [f"-D{k}={v}" for k, v in options.items()]
    run(args)
    run(["cmake", "--build", str(build_dir), "-j2", "--target", *targets])
    return build_dir


class Params(ctypes.Structure):
    """Mirror of debx::attention::Params (plugins/disentangledAttention/disentangledAttentionMath.h)."""

    _fields_ = [
        ("batch", ctypes.c_int32),
        ("seqLen", ctypes.c_int32),
        ("numHeads", ctypes.c_int32),
        ("headSize", ctypes.c_int32),
        ("span", ctypes.c_int32),
        ("posRows", ctypes.c_int32),
        ("positionBuckets", ctypes.c_int32),
        ("maxRelativePositions", ctypes.c_int32),
        ("c2p", ctypes.c_int32),
        ("p2c", ctypes.c_int32),
        ("scale", ctypes.c_float),
    ]
