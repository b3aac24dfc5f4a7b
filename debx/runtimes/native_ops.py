"""The native ONNX Runtime custom-op library (libdebx_ort_ops.so): the fused CPU kernel of
`debx::DebxDisentangledAttention` and the INT8 CPU ops.

One build definition: plugins/CMakeLists.txt, target `debx_ort_ops` (CI and the Dockerfile build the same target).
`build()` configures that file with every other target off (CONFIGURE) and builds only that target with CMake and the
machine's C++ compiler (`$CXX`, else g++, c++ or clang++; Ninja when installed, else make), in a temporary build
folder, then copies the library into a cache keyed by content: every file under the folders the target compiles and
includes (SOURCE_DIRS), CMakeLists.txt, the configure options and the compiler's identity
(`$DEBX_CACHE`, default ~/.cache/debx/ort_ops/<key>/libdebx_ort_ops.so). Any change to a source or a header is a new
key, so a stale library is never loaded. The environment's CXXFLAGS/LDFLAGS are not passed on (the key does not cover
them). The library is written to a temporary file and renamed, so concurrent and failed builds never leave a broken
library behind. No `-march=native`: baseline x86-64 with per-ISA translation units (AVX2, AVX-VNNI, AVX-512,
AVX-512 VNNI, AVX-512 BF16, AMX) chosen at run time by CPUID, so one build runs on any x86-64 CPU (a wheel, a Docker image, a shared cache).

The sources: plugins/ of a checkout, or the copy an installed debx carries as the package data `debx._native` (the
wheel and the sdist ship it; pyproject.toml), so `pip install debx` (not editable) builds and runs the native ops too.

The build is never silent and never hides in a probe: `available()` only says whether the library is built or can be
built here (sources, CMake, a compiler); the first use (`library_path()`, which sessions call) builds it with one
progress line on stderr (CMake's [n/m] lines too under `debx -v`); `debx ops-path --build` builds it ahead.
Sessions register it with `SessionOptions.register_custom_ops_library`.

The cache is not trusted blindly: a successful build records the library's sha256 beside it
(libdebx_ort_ops.so.sha256), and a cached library is loaded only when its digest matches; a truncated, replaced or
unrecorded one is rebuilt first (loading a truncated library kills the process with SIGBUS, and loading a foreign one
runs its constructors). The cache folders are the user's own, mode 0700: group/world-writable ones are made private,
and one owned by another user is refused.

When CMake or a compiler is missing, `available()` is False and ONNX Runtime sessions fall back to the NumPy
reference (debx.runtimes.reference_ops), which is exact but slow, with a warning naming what to install; `debx
bench` and `debx eval` show which one ran.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from debx import verbosity
from debx.errors import ConfigError, MissingDependencyError

TARGET = "debx_ort_ops"
LIBRARY = "libdebx_ort_ops.so"
DIGEST_SUFFIX = ".sha256"
# The folders of plugins/ that the target compiles and includes (tests/runtimes/test_native_build.py holds this
# against the build's real dependencies); the wheel ships them (pyproject.toml, package debx._native).
SOURCE_DIRS = ("ortOps", "disentangledAttention", "common")
# Only the op library: no CUDA, TensorRT, Triton or runtime dependencies are looked for.
CONFIGURE = ("-DCMAKE_BUILD_TYPE=Release", "-DDEBX_BUILD_ORT_OPS=ON", "-DDEBX_BUILD_PLUGINS=OFF",
             "-DDEBX_BUILD_HOST=OFF", "-DDEBX_BUILD_RUNTIME=OFF", "-DDEBX_BUILD_TESTS=OFF",
             "-DDEBX_TRITON_KERNELS=OFF")
# flags from the environment that CMake would add to every compile or link (not in the cache key, so not passed on)
_ENV_FLAGS = ("CFLAGS", "CXXFLAGS", "CPPFLAGS", "LDFLAGS")
_CHECKOUT = Path(__file__).resolve().parents[2] / "plugins"
_INSTALLED = Path(__file__).resolve().parents[1] / "_native"


def source_root() -> Path | None:
    """The folder holding CMakeLists.txt and SOURCE_DIRS: the installed package data (debx/_native) or the
    checkout's plugins/; None when neither is complete."""
    for root in (_INSTALLED, _CHECKOUT):
        if (root / "CMakeLists.txt").is_file() and all((root / d).is_dir() for d in SOURCE_DIRS):
            return root
    return None


def source_files(root: Path) -> list[Path]:
    """Every file the build can read: CMakeLists.txt and every file under SOURCE_DIRS (bytecode caches aside)."""
    files = [root / "CMakeLists.txt"]
    for d in SOURCE_DIRS:
        files += sorted(p for p in (root / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cmake() -> str | None:
    """$CMAKE, else cmake on PATH, else the one `pip install cmake` put beside this Python."""
    for name in (os.environ.get("CMAKE"), "cmake", str(Path(sys.executable).parent / "cmake")):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _generator() -> tuple[str, str] | None:
    """(CMake generator, its build program): Ninja when it is installed (apt, or pip beside this Python), else Unix
    Makefiles when make is; None when neither is."""
    for name in ("ninja", str(Path(sys.executable).parent / "ninja")):
        if shutil.which(name):
            return "Ninja", shutil.which(name)
    return ("Unix Makefiles", shutil.which("make")) if shutil.which("make") else None


@dataclass(frozen=True)
class Toolchain:
    cmake: str
    generator: str
    make_program: str
    cxx: str


def _need_compiler() -> str:
    cxx = _compiler()
    if cxx is None:
        raise MissingDependencyError("the native ONNX Runtime ops need a C++17 compiler (g++ or clang++; set $CXX): "
                                     "apt-get install g++")
    return cxx


def toolchain() -> Toolchain:
    """CMake, a build tool and a C++ compiler; MissingDependencyError (one line: what to install) when one is
    missing."""
    cxx = _need_compiler()
    cmake, generator = _cmake(), _generator()
    if cmake is None:
        raise MissingDependencyError("the native ONNX Runtime ops are built with CMake (>= 3.18), which is not "
                                     "installed: apt-get install cmake (or pip install cmake)")
    if generator is None:
        raise MissingDependencyError("the native ONNX Runtime ops need a build tool for CMake (ninja or make): "
                                     "apt-get install ninja-build (or pip install ninja)")
    return Toolchain(cmake, *generator, cxx)


def _sources() -> Path:
    root = source_root()
    if root is None:
        raise MissingDependencyError(f"the native ONNX Runtime ops need their C++ sources (plugins/ of a checkout, or "
                                     f"{_INSTALLED} of an installed debx), which are missing: reinstall debx")
    return root


def cache_root() -> Path:
    return Path(os.environ.get("DEBX_CACHE", Path.home() / ".cache" / "debx")) / "ort_ops"


@lru_cache(maxsize=8)
def _compiler_identity(cxx: str) -> str:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    return f"{os.path.realpath(cxx)}\n{version}"


def _key(cxx: str, root: Path) -> str:
    """The cache key: every source file (name and bytes), the configure options, the compiler and the machine."""
    h = hashlib.sha256()
    for f in source_files(root):
        h.update(f.relative_to(root).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(f.read_bytes()).digest())
    for part in (" ".join(CONFIGURE), _compiler_identity(cxx), platform.machine()):
        h.update(part.encode() + b"\0")
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


def _first_error(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "error" in ln.lower():
            # "CMake Error at CMakeLists.txt:12 (message):" says where; the next line says what
            return f"{ln} {lines[i + 1]}" if ln.startswith("CMake Error") and i + 1 < len(lines) else ln
    return lines[-1] if lines else "no output"


def _run(cmd: list[str], verbose: bool) -> None:
    """Run a CMake step; verbose: its output goes to stderr as it comes (CMake's [n/m] lines). MissingDependencyError
    with the first error line when it fails."""
    env = {k: v for k, v in os.environ.items() if k not in _ENV_FLAGS}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                            env=env)
    log = []
    for line in proc.stdout:
        log.append(line)
        if verbose:
            sys.stderr.write(line)
            sys.stderr.flush()
    if proc.wait() != 0:
        raise MissingDependencyError(f"building {LIBRARY} with CMake failed: {_first_error(''.join(log))} (the whole "
                                     "log: debx -v ops-path --build; DEBX_NATIVE_OPS=0 runs the NumPy reference)")


def cmake_configure(tools: Toolchain, source: Path, build_dir: Path, verbose: bool = False) -> None:
    """Configure plugins/CMakeLists.txt (`source`) into `build_dir` with CONFIGURE: only target debx_ort_ops; the
    folder gets compile_commands.json (every unit's flags)."""
    _run([tools.cmake, "-S", str(source), "-B", str(build_dir), "-G", tools.generator,
          f"-DCMAKE_MAKE_PROGRAM={tools.make_program}", f"-DCMAKE_CXX_COMPILER={tools.cxx}",
          "-DCMAKE_EXPORT_COMPILE_COMMANDS=ON", *CONFIGURE], verbose)


def cmake_build(tools: Toolchain, source: Path, build_dir: Path, verbose: bool = False) -> Path:
    """cmake_configure, then build target debx_ort_ops alone; the library built there."""
    cmake_configure(tools, source, build_dir, verbose)
    _run([tools.cmake, "--build", str(build_dir), "--target", TARGET, "--parallel", str(os.cpu_count() or 1)],
         verbose)
    built = build_dir / LIBRARY
    if not built.is_file():
        raise MissingDependencyError(f"building {LIBRARY} with CMake wrote no {built}")
    return built


def _compile(tools: Toolchain, source: Path, output: str, verbose: bool) -> None:
    """Build in a temporary folder beside `output` (removed after), then copy the library to `output`."""
    with tempfile.TemporaryDirectory(prefix=".cmake-", dir=str(Path(output).parent)) as build_dir:
        shutil.copyfile(cmake_build(tools, source, Path(build_dir), verbose), output)


def cached_library(out_dir: Path | None = None, source: Path | None = None) -> Path:
    """Where the library for these sources and this compiler lies (or will lie) in the cache; builds nothing."""
    root = source or _sources()
    return (out_dir or cache_root() / _key(_need_compiler(), root)) / LIBRARY


def build(out_dir: Path | None = None, *, source: Path | None = None, force: bool = False,
          verbose: bool | None = None) -> Path:
    """The library: the cached build when its digest checks out, else built now with CMake (one progress line on
    stderr; CMake's own output too when `verbose`, default: `debx -v`). `out_dir`: a folder to build into instead of
    the cache; `source`: the plugins/ folder to build from (default: source_root()); `force`: build even when a good
    library is cached. Raises MissingDependencyError (one line: what is missing or what failed)."""
    from debx.artifacts import file_digest

    root = source or _sources()
    cxx = _need_compiler()
    if out_dir is None:
        private_dir(cache_root())
    target_dir = private_dir(out_dir or cache_root() / _key(cxx, root))
    target = target_dir / LIBRARY
    if verified(target) and not force:
        return target
    tools = toolchain()
    verbosity.say(f"debx: building the native ONNX Runtime ops with CMake ({'rebuild' if force else 'first use'}, "
                  f"cached in {target_dir})")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=str(target_dir))
        os.close(fd)
        fd, tmp_digest = tempfile.mkstemp(prefix=".build-", suffix=DIGEST_SUFFIX, dir=str(target_dir))
        os.close(fd)
    except OSError as e:
        raise cache_error(target_dir, e) from None
    try:
        _compile(tools, root, tmp, verbosity.detail() if verbose is None else verbose)
        Path(tmp_digest).write_text(file_digest(tmp, None) + "\n")
        # the digest first: a library without its digest is rebuilt, never loaded
        os.replace(tmp_digest, _digest_file(target))
        os.replace(tmp, target)
    finally:
        for f in (tmp, tmp_digest):
            if os.path.exists(f):
                os.unlink(f)
    return target


_first_use: tuple[Path | None, str] | None = None  # this process's library_path(): (library, "") or (None, why)


def library_path() -> Path:
    """The library, built now when it is not cached yet (the first use: one progress line on stderr); raises
    MissingDependencyError (with the reason) when it cannot be had. Builds at most once per process."""
    global _first_use
    if _first_use is None:
        try:
            _first_use = (build(), "")
        except MissingDependencyError as e:
            _first_use = (None, str(e))
    path, why = _first_use
    if path is None:
        raise MissingDependencyError(why)
    return path


@lru_cache(maxsize=1)
def _probe() -> str:
    """"" when the library is cached or can be built here (sources, CMake, a build tool, a compiler), else why not.
    Builds nothing."""
    try:
        if verified(cached_library()):
            return ""
        toolchain()
    except MissingDependencyError as e:
        return str(e)
    return ""


def forget() -> None:
    """Drop what this process knows about the library (the next call probes and builds again; tests use it)."""
    global _first_use
    _first_use = None
    for fn in (_probe, _library_says, _library_says_of, _compiler_identity):
        fn.cache_clear()


def in_sessions() -> str:
    """How this process's ONNX Runtime sessions run debx's custom nodes, for reports: "native <library path>" once
    the library is loaded, else "NumPy reference (<why>)"."""
    if not _switched_off() and _first_use is not None and _first_use[0] is not None:
        return f"native {_first_use[0]}"
    return f"NumPy reference ({unavailable_reason() or 'the native library was not loaded'})"


def _switched_off() -> bool:
    return os.environ.get("DEBX_NATIVE_OPS", "1") == "0"


def available() -> bool:
    """True when the native library is built, or can be built here and its build did not fail in this process;
    builds nothing (the first library_path() does). Respects $DEBX_NATIVE_OPS=0 to force the NumPy reference, e.g.
    to compare the two."""
    return not unavailable_reason()


def unavailable_reason() -> str:
    """"" when available(), else why not (one line: what to install, or how the build failed)."""
    if _switched_off():
        return "disabled by DEBX_NATIVE_OPS=0"
    return _first_use[1] if _first_use is not None else _probe()


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
def _library_says_of(symbol: str, arg: int) -> bool:
    """The library's answer to a yes/no question it exports as `int symbol(int)`; False when it is unavailable."""
    if not available():
        return False
    import ctypes

    fn = getattr(ctypes.CDLL(str(library_path())), symbol)
    fn.argtypes = [ctypes.c_int]
    return bool(fn(arg))


def int8_family_available(family: int) -> bool:
    """True when the library's INT8 matmul kernel family `family` (1 = avx512-vnni, 2 = amx, 3 = avx2, 4 = avx-vnni)
    runs on this machine."""
    return _library_says_of("debx_ort_ops_int8_family_available", family)


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
    """True when the attention op's bf16 mode runs on AMX-BF16 tiles on this machine."""
    return attention_bf16_available(2)


def attention_bf16_available(family: int) -> bool:
    """True when the attention op's bf16 mode `family` (its bf16 attribute: 2 = amx-bf16, 3 = avx512-bf16,
    4 = avx512-bf16-emulated; 0 = float32) runs on this machine; False when the library is unavailable."""
    return _library_says_of("debx_ort_ops_attention_bf16_available", family)
