"""The Dockerfile, read as Docker reads it (no Docker engine here): onnxruntime-gpu only, tensorrt pinned to the
image's libnvinfer, portable native builds, a .dockerignore, and a build that fails without debx_serve. The shell
pieces that decide these are run here with bash on stand-ins (a fake build folder, a dpkg version string)."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, backslash continuations joined (Docker's parser)."""
    out, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continued instruction are skipped by Docker
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "the Dockerfile ends inside a continued line"
    return out


def runs() -> list[str]:
    return [args for ins, args in instructions() if ins == "RUN"]


def pip_installs() -> list[list[str]]:
    """The argument lists of every `pip install` in RUN lines (split at ; && ||)."""
    found = []
    for run in runs():
        for part in re.split(r";|&&|\|\|", run):
            words = part.split()
            if "pip" in words and "install" in words:
                found.append(words[words.index("install") + 1:])
    return found


def pyproject_extras() -> dict[str, list[str]]:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def req_name(req: str) -> str:
    return re.split(r"[<>=!~ \[;]", req.strip("\"'"))[0].lower()


def test_dockerfile_parses_and_starts_from_the_tensorrt_image():
    ins = instructions()
    assert ins[0][0] == "ARG" and "nvcr.io/nvidia/tensorrt" in ins[0][1]
    assert ins[1] == ("FROM", "${TRT_IMAGE}")
    assert {i for i, _ in ins} <= {"ARG", "FROM", "ENV", "RUN", "WORKDIR", "COPY", "CMD"}


def test_onnxruntime_gpu_only():
    extras = pyproject_extras()
    assert "onnxruntime-gpu" in {req_name(r) for r in extras["gpu"]}
    installs = pip_installs()
    assert installs
    gpu = False
    for args in installs:
        for a in args:
            assert req_name(a) != "onnxruntime", f"pip install {a}: the CPU wheel"
            m = re.fullmatch(r"[\"']?(?:-e\s*)?\.\[([\w,-]+)\][\"']?", a)
            if m:
                for extra in m.group(1).split(","):
                    names = {req_name(r) for r in extras[extra]}
                    assert "onnxruntime" not in names, f"the [{extra}] extra installs the CPU onnxruntime"
                    gpu |= "onnxruntime-gpu" in names
    assert gpu, "onnxruntime-gpu is installed (the [gpu] extra)"
    # the build fails if anything pulled in the CPU wheel anyway
    assert any(re.search(r"pip show onnxruntime >/dev/null 2>&1; then .*exit 1", r) for r in runs())


def test_onnx_extra_is_installed_without_its_onnxruntime():
    """The Dockerfile's own one-liner that reads the [onnx] extra, run on this pyproject.toml."""
    run = next(r for r in runs() if "ONNX_EXTRA=" in r)
    code = re.search(r"python -c '(.*?)'\)\"", run).group(1)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    got = {req_name(r) for r in p.stdout.split()}
    want = {req_name(r) for r in pyproject_extras()["onnx"]} - {"onnxruntime"}
    assert got == want and "onnx" in got
    assert "$ONNX_EXTRA" in run


def test_tensorrt_pinned_to_the_images_libnvinfer():
    run = next(r for r in runs() if "dpkg-query" in r)
    assert "libnvinfer10" in run and "tensorrt==${TRT_VERSION}" in run and "/opt/debx/constraints.txt" in run
    sed = re.search(r"\| (sed -E '[^']*')", run).group(1)
    for dpkg, want in (("10.13.3.9-1+cuda13.0", "10.13.3.9"), ("10.8.0.43-1+cuda12.8", "10.8.0.43")):
        p = subprocess.run(["bash", "-c", f"printf %s '{dpkg}' | {sed}"], capture_output=True, text=True, check=True)
        assert p.stdout.strip() == want
    for args in pip_installs():  # every install honours the pin
        assert "-c" in args and args[args.index("-c") + 1] == "/opt/debx/constraints.txt", args
    assert any("tensorrt.__version__" in r for r in runs()), "the installed bindings are checked against it"
    extras = [a.strip("\"'") for args in pip_installs() for a in args if a.strip("\"'").startswith(".[")]
    assert any("trt" in e.split("[")[1] for e in extras), extras  # tensorrt itself comes through the [trt] extra


def test_native_builds_are_portable():
    text = DOCKERFILE.read_text()
    for f in (DOCKERFILE, ROOT / "plugins" / "CMakeLists.txt", ROOT / "plugins" / "runtime" / "CMakeLists.txt"):
        assert "-march=native" not in re.sub(r"#.*", "", f.read_text()), f
        assert "-mtune=native" not in re.sub(r"#.*", "", f.read_text()), f
    assert "CMAKE_CXX_FLAGS" not in text
    from debx.runtimes import native_ops

    # the Python side's build is the same CMake target, configured with these options only
    assert not [f for f in native_ops.CONFIGURE if "native" in f or "FLAGS" in f]
    assert "debx ops-path --build" in text  # the Python side's library is built into the image


def test_dockerignore():
    ignore = ROOT / ".dockerignore"
    assert ignore.is_file()
    patterns = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]

    def ignored(path: str) -> bool:
        hit = False
        for p in patterns:
            neg = p.startswith("!")
            p = p.lstrip("!")
            if any(fnmatch.fnmatch(path, q) for q in (p, p.replace("**/", ""), p + "/*")) or \
                    path.startswith(p.rstrip("/") + "/"):
                hit = not neg
        return hit

    for path in (".git/HEAD", ".venv/bin/python", ".venv-optimum/bin/python", "runs/sst2/model.safetensors",
                 "build/CMakeCache.txt", "debx/__pycache__/x.pyc", "model.onnx"):
        assert ignored(path), path
    for path in ("pyproject.toml", "README.md", "debx/cli/__init__.py", "plugins/CMakeLists.txt",
                 "plugins/ortOps/debxOrtOps.cpp", "plugins/runtime/debx_serve.cpp", "exporters/export.py"):
        assert not ignored(path), path
    # every source file the image builds from is sent
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lost = [f for f in tracked.split() if ignored(f) and f not in ("Dockerfile", ".dockerignore")
            and not f.startswith(".github/")]
    assert not lost, lost


def _copy_step(tmp_path: Path, built: list[str]) -> subprocess.CompletedProcess:
    """The RUN that builds and installs the native parts, with cmake stubbed and /opt/debx moved to tmp_path."""
    run = next(r for r in runs() if "cmake --build" in r)
    root = tmp_path / "opt"
    for name in built:
        f = root / "build" / ("runtime" if not name.endswith(".so") else "") / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("#!/bin/sh\n")
        f.chmod(0o755)
    script = "cmake() { :; }; nproc() { echo 2; }; " + run.replace("/opt/debx", str(root))
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True)


@pytest.mark.parametrize("missing", [None, "debx_serve", "libdebx_ort_ops.so", "libdebx_plugins.so"])
def test_build_fails_without_debx_serve_or_a_library(tmp_path, missing):
    parts = ["libdebx_plugins.so", "libdebx_ort_ops.so", "debx_serve", "debx_tokenize"]
    p = _copy_step(tmp_path, [x for x in parts if x != missing])
    if missing is None:
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "opt" / "bin" / "debx_serve").is_file()
        assert (tmp_path / "opt" / "lib" / "libdebx_ort_ops.so").is_file()
    else:
        assert p.returncode != 0 and f"{missing} was not built" in p.stderr, p.stderr


def test_runtime_environment():
    env = " ".join(a for i, a in instructions() if i == "ENV")
    assert "DEBX_PLUGINS=/opt/debx/lib/libdebx_plugins.so" in env and "DEBX_ORT_OPS=/opt/debx/lib/libdebx_ort_ops.so" in env
    assert "PATH=/opt/debx/bin:$PATH" in env
