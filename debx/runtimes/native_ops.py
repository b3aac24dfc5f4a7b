"""The native ONNX Runtime custom-op library (plugins/ortOps): the fused CPU kernel of `debx::DebxDisentangledAttention`.

`library_path()` compiles it on first use with the machine's C++ compiler (`$CXX`, else g++ or c++; one translation
unit pair, a few seconds) into a cache keyed by the sources, the flags, the compiler and the CPU
(`$DEBX_CACHE`, default ~/.cache/debx/ort_ops/<key>/libdebx_ort_ops.so), writing to a temporary file and renaming, so
concurrent builds and failed builds never leave a broken library behind. `-march=native` is deliberate: the library
is built on the machine that runs it. Sessions register it with `SessionOptions.register_custom_ops_library`.

When no compiler is available, `available()` is False and ONNX Runtime sessions fall back to the NumPy reference
(debx.runtimes.reference_ops), which is exact but slow; `debx bench` shows which one ran.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from debx.errors import MissingDependencyError

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
SOURCES = ("ortOps/debxOrtOps.cpp", "ortOps/matMulInt8Op.cpp", "ortOps/matMulInt8Cpu.cpp",
           "ortOps/layerNormQuantizeOp.cpp", "ortOps/layerNormQuantizeCpu.cpp",
           "disentangledAttention/disentangledAttentionCpu.cpp", "disentangledAttention/disentangledAttentionAmx.cpp")
HEADERS = ("ortOps/ortAbi.h", "ortOps/ortHelpers.h", "ortOps/matMulInt8Op.h", "ortOps/matMulInt8Cpu.h",
           "ortOps/layerNormQuantizeOp.h", "ortOps/layerNormQuantizeCpu.h", "common/cpuVecMath.h",
           "common/amxTiles.h", "disentangledAttention/disentangledAttentionAmx.h",
           "disentangledAttention/disentangledAttentionCpu.h", "disentangledAttention/disentangledAttentionMath.h")
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden", "-Wall",
         "-Wno-maybe-uninitialized")
LIBRARY = "libdebx_ort_ops.so"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_root() -> Path:
    return Path(os.environ.get("DEBX_CACHE", Path.home() / ".cache" / "debx")) / "ort_ops"


def _key(cxx: str) -> str:
    h = hashlib.sha256()
    for rel in SOURCES + HEADERS:
        h.update(rel.encode())
        h.update((PLUGINS / rel).read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    for part in (" ".join(FLAGS), version, _cpu_signature(), platform.machine()):
        h.update(part.encode())
    return h.hexdigest()[:16]


def build(out_dir: Path | None = None) -> Path:
    """Compile the library (or return the cached build). Raises MissingDependencyError when it cannot be built."""
    missing = [rel for rel in SOURCES + HEADERS if not (PLUGINS / rel).is_file()]
    if missing:
        raise MissingDependencyError(f"the native ONNX Runtime ops need the plugins/ sources of the debx checkout "
                                     f"(missing {', '.join(missing)}); install debx from its repository (pip install -e .)")
    cxx = _compiler()
    if cxx is None:
        raise MissingDependencyError("the native ONNX Runtime ops need a C++17 compiler (g++ or clang++; set $CXX): "
                                     "apt-get install g++")
    target_dir = out_dir or cache_root() / _key(cxx)
    target = target_dir / LIBRARY
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=str(target_dir))
    os.close(fd)
    cmd = [cxx, *FLAGS, f"-I{PLUGINS / 'disentangledAttention'}", *(str(PLUGINS / s) for s in SOURCES), "-o", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            first = next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])
            raise MissingDependencyError(f"building {LIBRARY} failed: {first}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@lru_cache(maxsize=1)
def _cached() -> tuple[Path | None, str]:
    try:
        return build(), ""
    except MissingDependencyError as e:
        return None, str(e)


def library_path() -> Path:
    """The built library; raises MissingDependencyError (with the reason) when it cannot be had."""
    path, why = _cached()
    if path is None:
        raise MissingDependencyError(why)
    return path


def _switched_off() -> bool:
    return os.environ.get("DEBX_NATIVE_OPS", "1") == "0"


def available() -> bool:
    """True when the native library is built or can be built here (respects $DEBX_NATIVE_OPS=0 to force the
    NumPy reference, e.g. to compare the two)."""
    return not _switched_off() and _cached()[0] is not None


def unavailable_reason() -> str:
    return "disabled by DEBX_NATIVE_OPS=0" if _switched_off() else _cached()[1]


@lru_cache(maxsize=None)
def _library_says(symbol: str) -> bool:
    """The library's answer to a yes/no question it exports as `int symbol(void)`; False when it is unavailable."""
    if not available():
        return False
    import ctypes

    return bool(getattr(ctypes.CDLL(str(library_path())), symbol)())


def amx_available() -> bool:
    """True when the native library's AMX INT8 matmul ops can run on this machine (the CPU has AMX-INT8 tiles and the
    OS grants them to this process); False when the library is unavailable."""
    return _library_says("debx_ort_ops_amx_available")


def amx_bf16_available() -> bool:
    """True when the attention op's bf16 = 1 mode runs on AMX-BF16 tiles on this machine (else it runs float32)."""
    return _library_says("debx_ort_ops_amx_bf16_available")
