"""One build definition for the native op library (issue 13): debx's on-demand build is CMake's target debx_ort_ops
(plugins/CMakeLists.txt), cached by the content of every file the build can read, loud on first use and never inside
a probe; a compiler without an ISA's flags still builds it; and the wheel carries the sources, so a non-editable
install builds it too."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from debx.errors import MissingDependencyError
from debx.runtimes import native_ops

ROOT = Path(__file__).resolve().parents[2]


def _copy_sources(dest: Path) -> Path:
    src = native_ops.source_root()
    shutil.copy2(src / "CMakeLists.txt", dest / "CMakeLists.txt")
    for d in native_ops.SOURCE_DIRS:
        shutil.copytree(src / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


@pytest.mark.slow
def test_the_source_dirs_hold_every_file_the_build_reads(cmake_tree):
    """Ninja's dependency log of the real build: every source and header it read from plugins/ lies under
    SOURCE_DIRS, so the cache key (which hashes every file there) changes whenever any of them does."""
    build_dir, source = cmake_tree
    if not (build_dir / "build.ninja").is_file():
        pytest.skip("the dependency log needs the Ninja generator")
    deps = subprocess.run(["ninja", "-C", str(build_dir), "-t", "deps"], capture_output=True, text=True,
                          check=True).stdout
    read = {Path(ln.strip()).resolve() for ln in deps.splitlines() if ln.startswith("    ")}
    ours = {p.relative_to(source) for p in read if p.is_relative_to(source)}
    assert len(ours) >= 20, "the dependency log lists the plugins/ files the build read"
    keyed = {p.relative_to(source) for p in native_ops.source_files(source)}
    assert ours <= keyed, sorted(map(str, ours - keyed))
    assert {p.parts[0] for p in ours} == set(native_ops.SOURCE_DIRS)  # no folder keyed for nothing


def test_any_file_change_is_a_new_cache_key(tmp_path):
    """A header, a file added, CMakeLists.txt: each gives another key (the old lists left headers out)."""
    cxx = native_ops._compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    root = _copy_sources(tmp_path)
    keys = [native_ops._key(cxx, root)]
    assert native_ops._key(cxx, root) == keys[0]  # stable
    for change in (root / "common" / "amxTiles.h", root / "ortOps" / "newHelper.h", root / "CMakeLists.txt"):
        with open(change, "a") as f:
            f.write("\n// changed\n")
        keys.append(native_ops._key(cxx, root))
    assert len(set(keys)) == len(keys)


def test_a_probe_builds_nothing_and_the_first_use_says_it_builds(tmp_path, monkeypatch, capsys):
    calls = []

    def compile_(tools, source, output, verbose):
        calls.append(verbose)
        Path(output).write_bytes(b"\x7fELF stand-in")

    monkeypatch.setenv("DEBX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEBX_VERBOSITY", "0")
    monkeypatch.setattr(native_ops, "_compile", compile_)
    native_ops.forget()
    try:
        if native_ops.unavailable_reason():
            pytest.skip(native_ops.unavailable_reason())
        assert native_ops.available() and not calls and not list(tmp_path.glob("cache/ort_ops/*/*.so"))
        assert capsys.readouterr().err == ""
        lib = native_ops.library_path()
        assert calls == [False] and native_ops.verified(lib) and native_ops.library_path() == lib and len(calls) == 1
        err = capsys.readouterr().err
        assert err == f"debx: building the native ONNX Runtime ops with CMake (first use, cached in {lib.parent})\n"
        monkeypatch.setenv("DEBX_VERBOSITY", "1")  # debx -v: CMake's own progress too
        native_ops.build(force=True)
        assert calls == [False, True] and "(rebuild, cached in" in capsys.readouterr().err
    finally:
        native_ops.forget()


def test_a_failed_build_is_one_line_and_makes_the_ops_unavailable(tmp_path, monkeypatch):
    """A source that does not compile: the first use raises one line with the compiler's error, and the probe then
    says the ops are unavailable (sessions fall back to the reference) instead of trying again."""
    try:
        native_ops.toolchain()
    except MissingDependencyError as e:
        pytest.skip(str(e))
    (tmp_path / "src").mkdir()
    root = _copy_sources(tmp_path / "src")
    with open(root / "ortOps" / "isaTwins.cpp", "a") as f:
        f.write("\nthis is not C++;\n")
    monkeypatch.setenv("DEBX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native_ops, "source_root", lambda: root)
    native_ops.forget()
    try:
        assert native_ops.available()
        with pytest.raises(MissingDependencyError) as e:
            native_ops.library_path()
        msg = str(e.value)
        assert msg.startswith("building libdebx_ort_ops.so with CMake failed: ") and "isaTwins.cpp" in msg
        assert "error" in msg and "\n" not in msg and "DEBX_NATIVE_OPS=0" in msg
        assert not native_ops.available() and native_ops.unavailable_reason() == msg
        leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
        assert not leftovers, leftovers  # no half-written library, no build folder
    finally:
        native_ops.forget()


@pytest.mark.slow
def test_a_compiler_without_amx_flags_builds_the_library_without_amx(tmp_path):
    """check_cxx_compiler_flag in plugins/CMakeLists.txt: a compiler that rejects -mamx-* (an older g++) builds the
    AMX units without their flags; the library loads and reports the AMX family unavailable."""
    try:
        tools = native_ops.toolchain()
    except MissingDependencyError as e:
        pytest.skip(str(e))
    wrapper = tmp_path / "cxx-without-amx"
    wrapper.write_text(f'#!/bin/sh\nfor a in "$@"; do case "$a" in -mamx*) echo "cc1plus: error: unrecognized '
                       f'command-line option \'$a\'" >&2; exit 1;; esac; done\nexec {tools.cxx} "$@"\n')
    wrapper.chmod(0o755)
    build_dir = tmp_path / "build"
    native_ops.cmake_build(dataclasses.replace(tools, cxx=str(wrapper)), native_ops.source_root(), build_dir)
    cache = (build_dir / "CMakeCache.txt").read_text()
    assert "DEBX_CXX_HAS_mamx_tile:INTERNAL=" in cache and "DEBX_CXX_HAS_mavx512vnni:INTERNAL=1" in cache
    lib = ctypes.CDLL(str(build_dir / native_ops.LIBRARY))
    assert lib.debx_ort_ops_int8_family_available(2) == 0  # amx: left out
    assert lib.debx_ort_ops_amx_bf16_available() == 0
    commands = (build_dir / "compile_commands.json").read_text()
    assert "-mamx" not in commands and "-mavx512vnni" in commands


@pytest.mark.slow
def test_the_sdist_and_the_wheel_carry_the_sources_and_build_from_them(tmp_path):
    """`pip wheel` of the sdist of a copy of the checkout: the wheel holds debx/_native (CMakeLists.txt and
    SOURCE_DIRS), and native_ops, pointed at the unpacked wheel's package, builds the library from it alone; the
    library registers in ONNX Runtime."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    repo = tmp_path / "repo"
    for rel in files:
        if (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    sdist_dir = tmp_path / "sdist"
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(sdist_dir)!r})"],
                   cwd=repo, check=True, capture_output=True)
    (sdist,) = sdist_dir.glob("debx-*.tar.gz")
    shutil.unpack_archive(sdist, tmp_path / "unpacked-sdist")
    (from_sdist,) = (tmp_path / "unpacked-sdist").iterdir()
    assert (from_sdist / "plugins" / "CMakeLists.txt").is_file()
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(from_sdist), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("debx-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    checkout = native_ops.source_root()
    needed = {f"debx/_native/{p.relative_to(checkout).as_posix()}" for p in native_ops.source_files(checkout)
              if p.suffix in (".cpp", ".h", ".cu", ".txt")}
    assert needed <= names, sorted(needed - names)
    assert "debx/runtimes/native_ops.py" in names
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    package = tmp_path / "site" / "debx" / "_native"
    lib = native_ops.build(tmp_path / "out", source=package)
    assert native_ops.verified(lib)
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(lib))
    # the installed layout: native_ops beside debx/_native finds the sources there, not in a checkout
    probe = subprocess.run([sys.executable, "-c", "from debx.runtimes import native_ops; print(native_ops.source_root())"],
                           cwd=tmp_path, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert probe.stdout.strip() == str(package)
