"""The native ONNX Runtime custom-op library (plugins/ortOps): the fused CPU kernel of `debx::DebxDisentangledAttention`.

`library_path()` compiles it on first use with the machine's C++ compiler (`$CXX`, else g++ or c++; a dozen
translation units, some seconds) into a cache keyed by the sources, the flags and the compiler
(`$DEBX_CACHE`, default ~/.cache/debx/ort_ops/<key>/libdebx_ort_ops.so), writing to a temporary file and renaming, so
concurrent builds and failed builds never leave a broken library behind. No `-march=native`: the library is baseline
x86-64 with per-ISA translation units (AVX2, AVX-VNNI, AVX-512, AVX-512 VNNI, AMX; ISA_FLAGS) chosen at run time by CPUID, so one build
runs on any x86-64 CPU (a wheel, a Docker image, a shared cache). Sessions register it with
`SessionOptions.register_custom_ops_library`.

The cache is not trusted blindly: a successful build records the library's sha256 beside it
(libdebx_ort_ops.so.sha256), and a cached library is loaded only when its digest matches; a truncated, replaced or
unrecorded one is rebuilt first (loading a truncated library kills the process with SIGBUS, and loading a foreign one
runs its constructors). The cache folders are the user's own, mode 0700: group/world-writable ones are made private,
and one owned by another user is refused.

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

from debx.errors import ConfigError, MissingDependencyError

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
# baseline x86-64 first (the link keeps the first copy of an inline function two objects both emit), then the
# translation units compiled for newer instructions (ISA_FLAGS), which run only where CPUID says so
SOURCES = ("ortOps/debxOrtOps.cpp", "ortOps/matMulInt8Op.cpp", "ortOps/matMulInt8Cpu.cpp", "ortOps/isaTwins.cpp",
           "ortOps/layerNormQuantizeOp.cpp", "ortOps/layerNormQuantizeCpu.cpp",
           "disentangledAttention/disentangledAttentionCpu.cpp", "disentangledAttention/disentangledAttentionAmx.cpp",
           "ortOps/matMulInt8Avx2.cpp", "ortOps/matMulInt8AvxVnni.cpp", "ortOps/matMulInt8Vnni.cpp",
           "ortOps/matMulInt8Amx.cpp", "ortOps/isaAvx512.cpp", "ortOps/isaAmx.cpp")
HEADERS = ("ortOps/ortAbi.h", "ortOps/ortHelpers.h", "ortOps/matMulInt8Op.h", "ortOps/matMulInt8Cpu.h",
           "ortOps/matMulInt8Kernels.h", "ortOps/matMulInt8Epilogue.h", "ortOps/matMulInt8Avx2Kernel.h", "ortOps/isaTwins.h",
           "ortOps/layerNormQuantizeOp.h", "ortOps/layerNormQuantizeCpu.h", "common/cpuVecMath.h",
           "common/amxTiles.h", "disentangledAttention/disentangledAttentionAmx.h",
           "disentangledAttention/disentangledAttentionCpu.h", "disentangledAttention/disentangledAttentionMath.h")
# No -march=native: the library runs on any x86-64 CPU and picks its best code there (plugins/ortOps/isaTwins.h).
FLAGS = ("-O3", "-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-maybe-uninitialized")
AVX512 = ("-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq")
AVX2 = ("-mavx2", "-mfma")  # no AVX-512: these units run on AVX2-only CPUs
ISA_FLAGS = {
    "ortOps/matMulInt8Avx2.cpp": AVX2,
    "ortOps/matMulInt8AvxVnni.cpp": (*AVX2, "-mavxvnni"),
    "ortOps/matMulInt8Vnni.cpp": (*AVX512, "-mavx512vnni"),
    "ortOps/matMulInt8Amx.cpp": (*AVX512, "-mamx-tile", "-mamx-int8"),
    "ortOps/isaAvx512.cpp": AVX512,
    "ortOps/isaAmx.cpp": (*AVX512, "-mamx-tile", "-mamx-bf16", "-mavx512bf16"),
}
LIBRARY = "libdebx_ort_ops.so"
DIGEST_SUFFIX = ".sha256"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def cache_root() -> Path:
    return Path(os.environ.get("DEBX_CACHE", Path.home() / ".cache" / "debx")) / "ort_ops"


def _key(cxx: str) -> str:
    h = hashlib.sha256()
    for rel in SOURCES + HEADERS:
        h.update(rel.encode())
        h.update((PLUGINS / rel).read_bytes())
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    for part in (" ".join(FLAGS), repr(sorted(ISA_FLAGS.items())), version, platform.machine()):
        h.update(part.encode())
    return h.hexdigest()[:16]


def private_dir(path: Path) -> Path:
    """Create `path` (mode 0700) or check an existing one: it must be a real folder owned by this user; group or
    world write/read access is removed. MissingDependencyError when another user owns it."""
    import stat

    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:  # a read-only or foreign $DEBX_CACHE: the user's to fix, in one line
        raise cache_error(path, e) from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise MissingDependencyError(f"{path}: the native op cache must be a folder, not a link; remove it or set "
                                     "$DEBX_CACHE to a folder of your own")
    if st.st_uid != os.geteuid():
        raise MissingDependencyError(f"{path}: the native op cache belongs to another user (uid {st.st_uid}); "
                                     "remove it or set $DEBX_CACHE to a folder of your own")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def cache_error(path: Path, e: OSError) -> ConfigError:
    return ConfigError(f"cannot write the native op cache {path} ({e.strerror or e}): set $DEBX_CACHE to a "
                       "writable folder of your own")


def _digest_file(library: Path) -> Path:
    return library.with_name(library.name + DIGEST_SUFFIX)


def verified(library: Path) -> bool:
    """True when `library` is the file the last successful build wrote (its sha256 matches the recorded one)."""
    from debx.artifacts import file_digest

    try:
        recorded = _digest_file(library).read_text().strip()
        return library.is_file() and recorded == file_digest(library, None)
    except OSError:
        return False


def _run(cmd: list[str]) -> str | None:
    """Run a compiler command; None when it succeeded, else the first error line."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode == 0:
        return None
    return next((ln for ln in proc.stderr.splitlines() if "error" in ln), proc.stderr.strip()[:200])


def _compile(cxx: str, output: str) -> None:
    """Each translation unit with its own flags (baseline, or ISA_FLAGS), then one link. A compiler that does not know
    an ISA's flags builds that unit without them: its code is then left out (the unit's guards) and the library
    reports the family unavailable instead of failing to build."""
    include = f"-I{PLUGINS / 'disentangledAttention'}"
    with tempfile.TemporaryDirectory(prefix=".objs-", dir=str(Path(output).parent)) as objs:
        objects = []
        for i, rel in enumerate(SOURCES):
            obj = str(Path(objs) / f"{i}.o")
            base = [cxx, *FLAGS, include, "-c", str(PLUGINS / rel), "-o", obj]
            error = _run([*base[:-4], *ISA_FLAGS.get(rel, ()), *base[-4:]])
            if error is not None and rel in ISA_FLAGS:
                error = _run(base)
            if error is not None:
                raise MissingDependencyError(f"building {LIBRARY} failed: {error}")
            objects.append(obj)
        error = _run([cxx, "-shared", *objects, "-o", output])
        if error is not None:
            raise MissingDependencyError(f"building {LIBRARY} failed: {error}")


def build(out_dir: Path | None = None) -> Path:
    """Compile the library (or return the cached build when its digest checks out). Raises MissingDependencyError
    when it cannot be built."""
    from debx.artifacts import file_digest

    missing = [rel for rel in SOURCES + HEADERS if not (PLUGINS / rel).is_file()]
    if missing:
        raise MissingDependencyError(f"the native ONNX Runtime ops need the plugins/ sources of the debx checkout "
                                     f"(missing {', '.join(missing)}); install debx from its repository (pip install -e .)")
    cxx = _compiler()
    if cxx is None:
        raise MissingDependencyError("the native ONNX Runtime ops need a C++17 compiler (g++ or clang++; set $CXX): "
                                     "apt-get install g++")
    if out_dir is None:
        private_dir(cache_root())
    target_dir = private_dir(out_dir or cache_root() / _key(cxx))
    target = target_dir / LIBRARY
    if verified(target):
        return target
    try:
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=str(target_dir))
        os.close(fd)
        fd, tmp_digest = tempfile.mkstemp(prefix=".build-", suffix=DIGEST_SUFFIX, dir=str(target_dir))
        os.close(fd)
    except OSError as e:
        raise cache_error(target_dir, e) from None
    try:
        _compile(cxx, tmp)
        Path(tmp_digest).write_text(file_digest(tmp, None) + "\n")
        # the digest first: a library without its digest is rebuilt, never loaded
        os.replace(tmp_digest, _digest_file(target))
        os.replace(tmp, target)
    finally:
        for f in (tmp, tmp_digest):
            if os.path.exists(f):
                os.unlink(f)
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


@lru_cache(maxsize=None)
def int8_family_available(family: int) -> bool:
    """True when the library's INT8 matmul kernel family `family` (1 = avx512-vnni, 2 = amx, 3 = avx2, 4 = avx-vnni)
    runs on this machine."""
    if not available():
        return False
    import ctypes

    fn = ctypes.CDLL(str(library_path())).debx_ort_ops_int8_family_available
    fn.argtypes = [ctypes.c_int]
    return bool(fn(family))


def isa() -> str | None:
    """The instructions the library's float kernels run on here: "avx512" or "baseline" (x86-64; also when
    $DEBX_CPU_ISA=baseline, which turns every native matmul family off too); None when it is unavailable."""
    if not available():
        return None
    import ctypes

    fn = ctypes.CDLL(str(library_path())).debx_ort_ops_isa
    fn.restype = ctypes.c_char_p
    return fn().decode()


def amx_bf16_available() -> bool:
    """True when the attention op's bf16 = 1 mode runs on AMX-BF16 tiles on this machine (else it runs float32)."""
    return _library_says("debx_ort_ops_amx_bf16_available")
