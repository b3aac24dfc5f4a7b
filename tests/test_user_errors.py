"""User errors are one line `debx: error: ...` and exit 2 (never a traceback), and leave nothing behind: bad sizes and
flags, read-only outputs and caches, unreadable ONNX files, missing external data, a task that does not fit the model,
an over-long --max-seq-len, a TensorRT plan where TensorRT is missing (issue 11, item 5)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cli_helpers import run_main as main  # noqa: E402 (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]




def one_line_error(code: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("debx: error:") and message in lines[0], err


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, tiny_checkpoints, glue_dir) -> Path:
    """An FP32 export of the tiny v3 checkpoint (2 labels) with its sidecar."""
    from debx.exporters.export import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("user-errors") / "m.onnx"
    export_onnx(ExportConfig(checkpoint=tiny_checkpoints["v3"], output=out, data_dir=glue_dir))
    return out


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--batch-size", "-4"], "--batch-size must be an integer >= 1, got -4"),
    (["--threads", "-1"], "--threads must be an integer >= 1, got -1"),
    (["--max-seq-len", "0"], "--max-seq-len must be an integer >= 1"),
])
def test_eval_bad_sizes(onnx_model, glue_dir, flags, message, monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "eval", "--task", "sst2", "--engine", onnx_model, "--data-dir", glue_dir,
                        "--limit", "4", *flags)
    one_line_error(code, err, message)


def test_threads_are_checked_by_the_library_too(onnx_model):
    from debx.errors import ConfigError
    from debx.evaluate import EvalConfig
    from debx.runtimes import runner_for

    with pytest.raises(ConfigError, match="--threads"):
        runner_for(onnx_model, threads=-1)
    with pytest.raises(ConfigError, match="--batch-size"):
        EvalConfig(task="sst2", engine=onnx_model, batch_size=0)


def test_validate_threads(onnx_model, monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "validate", onnx_model, "--threads", "-1")
    one_line_error(code, err, "--threads must be an integer >= 1")


@pytest.mark.parametrize("flags, message", [
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "-1"], "--lr must be a finite number > 0, got -1"),
    (["--dropout", "2"], "--dropout must be in [0, 1), got 2"),
    (["--vocab-size", "10"], "--vocab-size 10 is too small for this text"),
    (["--threads", "-1"], "--threads must be an integer >= 1"),
])
def test_train_bad_settings_create_nothing(tmp_path, glue_dir, flags, message, monkeypatch, capsys):
    out = tmp_path / "run"
    code, _, err = main(monkeypatch, capsys, "train", "--task", "sst2", "--preset", "tiny", "-o", out, "--data-dir",
                        glue_dir, "--max-train-samples", "64", "--stop-after", "1", *flags)
    one_line_error(code, err, message)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_validate_and_eval_a_truncated_onnx(onnx_model, tmp_path, glue_dir, monkeypatch, capsys):
    bad = tmp_path / "cut.onnx"
    data = onnx_model.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    shutil.copy(onnx_model.with_name("m.onnx.json"), tmp_path / "cut.onnx.json")
    code, _, err = main(monkeypatch, capsys, "validate", bad)
    one_line_error(code, err, "not a readable ONNX model, truncated or corrupt?")
    code, _, err = main(monkeypatch, capsys, "eval", "--task", "sst2", "--engine", bad, "--data-dir", glue_dir)
    one_line_error(code, err, "not a readable ONNX model")


@pytest.fixture
def external_without_data(onnx_model, tmp_path) -> Path:
    """The export re-saved with its weights in ext.onnx.data, which is then removed (or truncated by the test)."""
    import onnx

    out = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(str(onnx_model)), str(out), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    shutil.copy(onnx_model.with_name("m.onnx.json"), tmp_path / "ext.onnx.json")
    return out


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_missing_or_truncated_external_data(external_without_data, glue_dir, damage, monkeypatch, capsys):
    data = external_without_data.with_name("ext.onnx.data")
    if damage == "missing":
        data.unlink()
        message = "its weights file ext.onnx.data is missing"
    else:
        data.write_bytes(data.read_bytes()[:1000])
        message = "its weights file ext.onnx.data is truncated"
    code, _, err = main(monkeypatch, capsys, "validate", external_without_data)
    one_line_error(code, err, message)
    code, _, err = main(monkeypatch, capsys, "eval", "--task", "sst2", "--engine", external_without_data,
                        "--data-dir", glue_dir)
    one_line_error(code, err, message)


def test_task_with_another_label_count(onnx_model, tiny_checkpoints, tmp_path, glue_dir, monkeypatch, capsys):
    lines = (glue_dir / "SST-2" / "dev.tsv").read_text().splitlines()[:21]
    (tmp_path / "dev.tsv").write_text("\n".join(lines) + "\n")
    spec = tmp_path / "three.yaml"
    spec.write_text('name: three\nfiles: {dev: dev.tsv}\ntext_a: sentence\nlabel: label\nlabels: ["0", "1", "2"]\n')
    for source in (["--engine", onnx_model], ["--model", tiny_checkpoints["v3"]]):
        code, _, err = main(monkeypatch, capsys, "eval", "--task", spec, *source)
        one_line_error(code, err, "task three has 3 labels (0, 1, 2), but")
        assert "predicts 2 labels" in err


def test_calibrate_max_seq_len_over_the_model_limit(onnx_model, tmp_path, glue_dir, monkeypatch, capsys):
    code, _, err = main(monkeypatch, capsys, "calibrate", onnx_model, "--task", "sst2", "-o", tmp_path / "q.onnx",
                        "--data-dir", glue_dir, "--num-samples", "8", "--max-seq-len", "100000")
    one_line_error(code, err, "--max-seq-len 100000 exceeds 128 tokens, the longest sequence the ONNX file")
    assert list(tmp_path.iterdir()) == []


def test_bench_a_plan_without_tensorrt(tmp_path, monkeypatch, capsys):
    """The TensorRT runner is built like every other (bench's --threads applies where a runtime has threads), and
    without TensorRT the run stops in one line saying so."""
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not a plan")
    for extra in ([], ["--threads", "2"]):
        code, _, err = main(monkeypatch, capsys, "bench", "--engine", plan, "--seq", "8", "--iters", "1", *extra)
        progress = [ln for ln in err.strip().splitlines() if ln.startswith("loading ")]  # bench's progress line
        one_line_error(code, "\n".join(ln for ln in err.splitlines() if ln not in progress), "TensorRT Python package "
                       "not found")


def test_runner_options_apply_where_taken(tmp_path):
    from debx.errors import ConfigError
    from debx.runtimes import runner_for

    plan = tmp_path / "model.plan"
    plan.write_bytes(b"x")
    assert runner_for(plan, where_taken=("threads",), threads=2).path == plan
    with pytest.raises(ConfigError, match="threads do not apply to the tensorrt runtime"):
        runner_for(plan, threads=2)


# ---------------------------------------------------------------------------------------------------------------------
# Read-only destinations: as root, permissions do not stop writes, so the command runs as `nobody` (setpriv)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def shared_dir():
    """A folder every user can read (the inputs) and write in; removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="debx-ro-"))
    d.chmod(0o777)
    yield d
    for p in d.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(d, ignore_errors=True)


def run_unprivileged(args: list, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "debx", *map(str, args)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make a folder read-only for this process")
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HOME": "/nonexistent", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def readable_copy(src: Path, dest: Path) -> Path:
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy(src, dest)
    for p in [dest, *dest.rglob("*")] if dest.is_dir() else [dest]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dest


@pytest.mark.parametrize("command", ["export", "calibrate", "eval --report", "bench --json", "train"])
def test_read_only_output_folder(command, shared_dir, onnx_model, tiny_checkpoints, glue_dir):
    model = readable_copy(onnx_model, shared_dir / "m.onnx")
    readable_copy(onnx_model.with_name("m.onnx.json"), shared_dir / "m.onnx.json")
    ckpt = readable_copy(tiny_checkpoints["v3"], shared_dir / "ckpt")
    import json

    side = json.loads(model.with_name("m.onnx.json").read_text())
    side["source"]["checkpoint"] = str(ckpt)
    model.with_name("m.onnx.json").write_text(json.dumps(side))
    ro = shared_dir / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    args = {
        "export": ["export", ckpt, "-o", ro / "x.onnx"],
        "calibrate": ["calibrate", model, "--task", "sst2", "-o", ro / "q.onnx", "--num-samples", "8"],
        "eval --report": ["eval", "--task", "sst2", "--engine", model, "--limit", "4", "--report", ro / "r.json"],
        "bench --json": ["bench", "--engine", model, "--seq", "8", "--iters", "1", "--json", ro / "b.json"],
        "train": ["train", "--task", "sst2", "--preset", "tiny", "-o", ro / "run", "--max-train-samples", "32"],
    }[command]
    p = run_unprivileged([*args, "--data-dir", glue_dir] if command != "bench --json" else args,
                         env={"DEBX_CACHE": str(shared_dir / "cache")})
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith("debx: error:") and "cannot write in" in lines[-1], p.stderr
    assert "Traceback" not in p.stderr
    assert list(ro.iterdir()) == []


def test_read_only_cache(shared_dir, tiny_checkpoints, glue_dir):
    """A $DEBX_CACHE this user cannot write: the native op library cannot be built there; one line says so."""
    ckpt = readable_copy(tiny_checkpoints["v3"], shared_dir / "ckpt")
    cache = shared_dir / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    out = shared_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    p = run_unprivileged(["export", ckpt, "-o", out / "d.onnx", "--attention", "debx", "--data-dir", glue_dir],
                         env={"DEBX_CACHE": str(cache)})
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("debx: error: cannot write the native op cache") and "$DEBX_CACHE" in last, p.stderr
    assert "Traceback" not in p.stderr and list(out.iterdir()) == [] and list(cache.iterdir()) == []
