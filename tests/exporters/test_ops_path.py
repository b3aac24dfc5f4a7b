"""`debx ops-path` / debx.ops_library(): the native ONNX Runtime op library for plain ONNX Runtime users, and the
sidecar of a graph with debx nodes naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from debx.runtimes import native_ops

pytestmark = pytest.mark.skipif(not native_ops.available(), reason=f"native ops: {native_ops.unavailable_reason()}")

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def test_ops_path_prints_the_built_library():
    p = subprocess.run([sys.executable, "-m", "debx", "ops-path"], capture_output=True, text=True, env=ENV,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    path = Path(p.stdout.strip())
    assert p.stdout.count("\n") == 1, "stdout is the path alone (for $(debx ops-path))"
    assert path.is_file() and path.name == native_ops.LIBRARY and path == native_ops.library_path()
    assert p.stderr == "", "no progress line when the library is already built"


def test_ops_path_progress_line_when_it_builds(tmp_path, monkeypatch, capsys):
    """An empty cache: one progress line on stderr (none under -q), then the path; the build is faked (the real
    CMake build is tested in tests/runtimes)."""
    from debx.cli import main

    def fake_compile(tools, source, output, verbose):
        Path(output).write_bytes(b"\x7fELF not really")

    monkeypatch.setenv("DEBX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEBX_VERBOSITY", "0")  # restored after the test (-q sets it for the process)
    monkeypatch.setattr(native_ops, "_compile", fake_compile)
    for quiet in (False, True):
        native_ops.forget()
        for f in (tmp_path / "cache").rglob("libdebx_ort_ops.so*"):
            f.unlink()
        monkeypatch.setattr(sys, "argv", ["debx", *(["-q"] if quiet else []), "ops-path"])
        with pytest.raises(SystemExit) as e:
            main()
        out = capsys.readouterr()
        assert (e.value.code or 0) == 0, out.err
        assert Path(out.out.strip()).parent.parent == tmp_path / "cache" / "ort_ops"
        if quiet:
            assert out.err == ""
        else:
            assert out.err.startswith("debx: building the native ONNX Runtime ops with CMake (first use, cached in ")
            assert out.err.count("\n") == 1
    native_ops.forget()
    monkeypatch.delenv("DEBX_CACHE")


def test_ops_path_without_a_compiler_is_one_line(tmp_path, monkeypatch, capsys):
    from debx.cli import main

    monkeypatch.setenv("DEBX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(native_ops, "_compiler", lambda: None)
    native_ops.forget()
    monkeypatch.setattr(sys, "argv", ["debx", "ops-path"])
    with pytest.raises(SystemExit) as e:
        main()
    native_ops.forget()
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("debx: error: ") and "C++17 compiler" in err and err.count("\n") == 1


def test_plain_onnxruntime_runs_a_debx_graph_with_the_library(exported):
    """The sidecar of an --attention debx export names the library; plain ONNX Runtime (no debx runner) runs the
    graph once the library from debx.ops_library() is registered, and matches debx's runner."""
    import onnxruntime as ort

    from debx import ops_library
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner

    res = exported("v3", attention="debx")
    side = json.loads(res.sidecar.read_text())
    assert side["custom_ops"]["domain"] == "debx"
    assert side["custom_ops"]["onnxruntime_library"] == "libdebx_ort_ops.so"
    assert "debx ops-path" in side["custom_ops"]["path"]
    assert json.loads(exported("v3").sidecar.read_text())["custom_ops"] is None  # standard ops only

    with pytest.raises(Exception, match="(?i)debx|custom|domain"):
        ort.InferenceSession(str(res.output), providers=["CPUExecutionProvider"])  # without the library
    so = ort.SessionOptions()
    so.register_custom_ops_library(str(ops_library()))
    sess = ort.InferenceSession(str(res.output), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(5, 100, (2, 9)).astype(np.int64),
             "attention_mask": np.ones((2, 9), np.int64)}
    feeds = {i.name: feeds[i.name] for i in sess.get_inputs()}
    got = sess.run(None, feeds)[0]
    with OnnxRuntimeRunner(res.output) as r:
        want = r.infer(feeds)["logits"]
        assert r.describe()["debx_ops"] == f"native {ops_library()}"  # what eval reports and prints
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.filterwarnings("ignore:debx attention nodes run on the slow NumPy reference")
def test_reports_say_when_debx_nodes_run_on_the_reference(exported, monkeypatch):
    from debx.evaluate import kernel_notes
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner

    res = exported("v3", attention="debx")
    monkeypatch.setenv("DEBX_NATIVE_OPS", "0")
    # the fallback warning is once per process: left unsaid here, so that a later test still sees it
    monkeypatch.setattr("debx.runtimes.onnxruntime._warned_native", False)
    with OnnxRuntimeRunner(res.output) as r:
        described = r.describe()
    assert described["debx_ops"] == "NumPy reference (disabled by DEBX_NATIVE_OPS=0)"
    assert kernel_notes({"runner": described})[-1] == "debx custom ops: NumPy reference (disabled by DEBX_NATIVE_OPS=0)"
    with OnnxRuntimeRunner(exported("v3").output) as r:  # standard ops only: nothing to say
        assert r.describe()["debx_ops"] is None
