"""The `debx` entry point: SIGTERM cleans up like Ctrl-C (no temporary folders left, one line, exit 143 / 130)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "glue"


def _signal_when(cmd: list[str], ready, env: dict, sig: int, timeout: float = 120) -> subprocess.CompletedProcess:
    """Start `debx cmd`, send `sig` as soon as ready() is true, and return the finished process."""
    p = subprocess.Popen([sys.executable, "-m", "debx", *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    t0 = time.monotonic()
    while not ready():
        assert p.poll() is None, f"finished before the signal: {p.communicate()}"
        assert time.monotonic() - t0 < timeout
        time.sleep(0.02)
    p.send_signal(sig)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _leftovers(*folders: Path) -> list[str]:
    return [str(p) for f in folders if f.exists() for p in f.rglob("*") if ".tmp" in p.name or p.name.startswith("tmp")]


@pytest.mark.parametrize("command, sig", [("export", signal.SIGTERM), ("train", signal.SIGTERM),
                                          ("export", signal.SIGINT)])
def test_sigterm_removes_temporary_folders(tmp_path, tiny_checkpoints, command, sig):
    scratch = tmp_path / "tmpdir"  # $TMPDIR: train's scratch folder lives there
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    if command == "export":
        cmd = ["export", str(tiny_checkpoints["v3"]), "-o", str(out / "m.onnx"), "--data-dir", str(GLUE)]
        ready = lambda: out.is_dir() and any(".tmp-" in p.name for p in out.iterdir())  # noqa: E731
    else:
        cmd = ["train", "--task", "sst2", "--preset", "tiny", "-o", str(out / "run"), "--data-dir", str(GLUE),
               "--epochs", "1", "--batch-size", "16", "--max-train-samples", "2000", "--max-seq-len", "64",
               "--vocab-size", "600", "--eval-every", "2"]
        ready = lambda: (out / "run" / "last").is_dir()  # noqa: E731 (training, with resume state written)
    p = _signal_when(cmd, ready, env, sig)
    assert p.returncode == 128 + sig, p.stderr[-2000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    word = "terminated" if sig == signal.SIGTERM else "interrupted"
    assert lines[-1] == f"debx: {word}" and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert _leftovers(out, scratch) == []
    if command == "export":
        assert list(out.iterdir()) == []
