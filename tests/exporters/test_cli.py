"""End to end: the real `debx export` and `debx validate` commands on a tiny model (a subprocess for the main flow,
the real entry point in-process for the rest)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cli_helpers import run_main as main  # noqa: E402 (tests/ is on sys.path)

ENV = dict(os.environ, OMP_NUM_THREADS="1")


def debx(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "debx", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=600)


def test_export_then_validate(tmp_path, tiny_checkpoints, glue_dir):
    out = tmp_path / "v3.fp16.onnx"
    p = debx("export", tiny_checkpoints["v3"], "-o", out, "--attention", "debx", "--fp16", "--opset", "18",
             "--data-dir", glue_dir)
    assert p.returncode == 0, p.stderr
    assert "validated" in p.stdout and "maximum length with padding" in p.stdout
    side = json.loads((tmp_path / "v3.fp16.onnx.json").read_text())
    assert (side["attention"], side["precision"], side["opset"]) == ("debx", "fp16", 18)
    p = debx("validate", out, "--data-dir", glue_dir)  # the checkpoint comes from the sidecar
    assert p.returncode == 0, p.stderr
    assert "PASS" in p.stdout




def test_default_output_name(tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = main(monkeypatch, capsys, "export", tiny_checkpoints["v1"], "--data-dir", glue_dir)
    assert code == 0, err
    assert sorted(f.name for f in tmp_path.iterdir()) == ["v1.fp32.onnx", "v1.fp32.onnx.json"]


@pytest.mark.parametrize("args, message", [
    (["export", "{missing}", "-o", "{out}"], "no such file or directory"),
    (["export", "{v1}", "-o", "{out}", "--attention", "trt"], "log-bucket relative positions"),
    (["export", "{v1}", "-o", "{out}", "--max-seq-len", "999"], "exceeds the model's limit"),  # absolute positions
    (["validate", "{out}", "--model", "{v3}"], "no such ONNX file"),
])
def test_bad_input_is_one_line_no_traceback_no_file(tmp_path, tiny_checkpoints, args, message, monkeypatch, capsys):
    out = tmp_path / "model.onnx"
    fill = {"missing": tmp_path / "nope", "out": out, "v1": tiny_checkpoints["v1"], "v3": tiny_checkpoints["v3"]}
    code, _, err = main(monkeypatch, capsys, *[a.format(**fill) for a in args])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("debx: error:") and message in lines[0], err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_failed_validation_exits_1_and_leaves_no_file(tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    from debx.exporters import onnx_config

    monkeypatch.setitem(onnx_config.TOLERANCES, "fp32", onnx_config.Tolerance(atol=-1.0, argmax_agreement=1.0))
    code, _, err = main(monkeypatch, capsys, "export", tiny_checkpoints["v3"], "-o", tmp_path / "m.onnx",
                        "--data-dir", glue_dir)
    assert code == 1 and err.startswith("debx: error: validation failed") and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
