"""The Python API (debx/api.py): `import debx` stays cheap, the names import, and the README's example runs as
written (on a tiny checkpoint linked at runs/sst2)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_debx_loads_no_heavy_stack():
    code = ("import sys, debx; from debx import export, calibrate, load_runner, ops_library; "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'numpy', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"import debx loaded {p.stdout.strip()}"


def test_api_names_and_evaluate_module_is_callable():
    import debx
    import debx.evaluate as ev
    from debx import calibrate, evaluate, export, load_runner, ops_library

    assert evaluate is ev and callable(evaluate)  # the module debx.evaluate doubles as the call
    assert all(callable(f) for f in (export, calibrate, load_runner, ops_library))
    assert set(debx.__all__) >= {"export", "calibrate", "evaluate", "load_runner"}
    with pytest.raises(AttributeError):
        debx.no_such_name


def test_api_errors_are_debx_errors(tmp_path):
    from debx import export, load_runner
    from debx.errors import ConfigError, DebxError

    with pytest.raises(DebxError, match="no such file or directory|not a checkpoint|config.json"):
        export(tmp_path / "missing", tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="no such file or directory"):
        load_runner(tmp_path / "nothing.onnx", tokenizer=tmp_path)


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has the API example block"
    return m.group(1)


@pytest.mark.slow
def test_readme_api_example_runs(tmp_path, trained_like_checkpoints, glue_dir, monkeypatch):
    (tmp_path / "runs").mkdir()
    os.symlink(trained_like_checkpoints["v3"], tmp_path / "runs" / "sst2")
    p = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
                       timeout=900, env=dict(os.environ, PYTHONPATH=str(ROOT), GLUE_DIR=str(glue_dir),
                                             OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 4, p.stdout
    for line in lines[:3]:
        assert "{'accuracy':" in line, line
    assert re.fullmatch(r"\[[01] [01]\]", lines[3]), lines[3]
    assert (tmp_path / "runs" / "sst2.int8.onnx").is_file() and (tmp_path / "runs" / "sst2.onnx.json").is_file()
