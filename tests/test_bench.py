"""debx bench: report fields, round-robin interleaving, baselines, and one-line failures on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from debx import bench
from debx.bench import BenchConfig, Engine, kernel_notes, round_robin, run_bench, time_shape
from debx.errors import ConfigError, MissingDependencyError

ROOT = Path(__file__).resolve().parents[1]
ROW_FIELDS = {"engine", "kind", "precision", "batch", "seq", "iters", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
              "min_ms", "seq_per_s", "tokens_per_s", "load_mb", "run_mb", "ratio", "max_abs_diff"}


class FakeRunner:
    """Records every call in a shared log; returns a constant output."""

    def __init__(self, name: str, log: list, value: float = 0.0):
        self.name, self.log, self.value = name, log, value

    def activate(self):
        return self

    def deactivate(self):
        pass

    def describe(self):
        return {"runner": "fake"}

    def infer(self, feeds):
        self.log.append(self.name)
        return {"logits": np.full((feeds["input_ids"].shape[0], 2), self.value, np.float32)}


def _fakes(n: int, log: list) -> list[Engine]:
    return [Engine(f"e{i}", "fake", FakeRunner(f"e{i}", log, value=float(i))) for i in range(n)]


def test_round_robin_rotates_the_first_engine():
    assert round_robin(3, 3) == [0, 1, 2, 1, 2, 0, 2, 0, 1]
    order = round_robin(4, 8)
    assert all(order.count(i) == 8 for i in range(4))


def test_timed_calls_are_interleaved_in_turns(tmp_path):
    log: list[str] = []
    engines = _fakes(3, log)
    cfg = BenchConfig(engines=[], models=[tmp_path], warmup=2, iters=4, block=1)
    lat, run_mb, outs = time_shape(engines, bench.make_feeds(1, 8), cfg)
    warm, timed = log[:6], log[6:]
    assert sorted(warm) == ["e0", "e0", "e1", "e1", "e2", "e2"]
    # each turn: one settling call + block timed calls, engines in rotating round-robin order
    assert timed == [f"e{i}" for i in round_robin(3, 4) for _ in range(2)]
    assert all(len(set(timed[r * 6:(r + 1) * 6])) == 3 for r in range(4))  # every engine once per round
    assert all(len(v) == 4 for v in lat.values())
    assert set(outs) == {"e0", "e1", "e2"}


def test_turns_hold_block_timed_calls_and_stop_at_iters(tmp_path):
    log: list[str] = []
    cfg = BenchConfig(engines=[], models=[tmp_path], warmup=0, iters=5, block=3)
    lat, _, _ = time_shape(_fakes(2, log), bench.make_feeds(1, 8), cfg)
    assert all(len(v) == 5 for v in lat.values())  # 3 + 2: the last turn is cut to what is left
    timed = log[2:]  # after the one parity call each
    assert timed[:4] == ["e0"] * 4 and timed[4:8] == ["e1"] * 4  # settle + 3 timed, then the next engine
    with pytest.raises(Exception, match="--block"):
        BenchConfig(models=[tmp_path], block=0)


def test_seconds_budget_gives_every_engine_the_same_count(tmp_path):
    log: list[str] = []
    cfg = BenchConfig(models=[tmp_path], warmup=0, iters=None, seconds=0.05, min_iters=2)
    lat, _, _ = time_shape(_fakes(2, log), bench.make_feeds(2, 4), cfg)
    assert len(lat["e0"]) == len(lat["e1"]) >= 2


def test_report_fields_and_ratio_with_fake_engines(tmp_path):
    log: list[str] = []
    cfg = BenchConfig(models=[tmp_path], batches=(1, 2), seqs=(4, 9), warmup=1, iters=3, ratio_to="e1",
                      json_path=tmp_path / "b.json")
    res = run_bench(cfg, engines=_fakes(2, log))
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["format"] == "debx-bench/1" and report["reference"] == "e1"
    assert report["parity_reference"] == "e0"
    assert len(report["results"]) == 2 * 2 * 2
    for row in report["results"]:
        assert ROW_FIELDS <= set(row)
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["tokens_per_s"] == pytest.approx(row["seq_per_s"] * row["seq"])
        if row["engine"] == "e1":  # the ratio reference; parity is against the first entry (e0)
            assert row["ratio"] == pytest.approx(1.0)
            assert row["max_abs_diff"] == pytest.approx(1.0)  # outputs 1 vs 0: the parity guard sees it
        else:
            assert row["max_abs_diff"] == 0.0
    assert res.report == report
    assert kernel_notes(report) == []
    report["engines"][1]["info"] = {"native_int8_ops": {"DebxMatMulInt8": 72, "DebxLayerNormQuantize": 23},
                                    "int8_kernels": "avx512-vnni"}
    report["engines"][0]["info"] = {"native_int8_ops": None, "int8_kernels": "ort"}  # an INT8 file left to ORT
    assert kernel_notes(report) == ["e0: INT8 matmul kernels ort", "e1: INT8 matmul kernels avx512-vnni; debx native "
                                    "INT8 CPU ops DebxMatMulInt8 ×72, DebxLayerNormQuantize ×23"]
    with pytest.raises(ConfigError, match="--ratio-to"):
        run_bench(BenchConfig(models=[tmp_path], ratio_to="nope", iters=1), engines=_fakes(2, []))


def test_bench_tiny_model_two_engines(tmp_path, tiny_checkpoints):
    """The debx PyTorch model and the transformers model of the same checkpoint, side by side, JSON + PNG."""
    ckpt = tiny_checkpoints["v3"]
    cfg = BenchConfig(models=[ckpt], compare=("hf",), batches=(1, 2), seqs=(5, 16), threads=1, warmup=1, iters=3,
                      json_path=tmp_path / "bench.json", plot_path=tmp_path / "bench.png", peak_rss=False)
    res = run_bench(cfg)
    report = json.loads(res.json_path.read_text())
    assert [e["name"] for e in report["engines"]] == ["debx-pytorch", "hf-pytorch"]
    assert {e["kind"] for e in report["engines"]} == {"debx-pytorch", "hf-pytorch"}
    assert len(report["results"]) == 2 * 2 * 2
    for row in report["results"]:
        assert ROW_FIELDS <= set(row)
        assert row["iters"] == 3 and row["p50_ms"] > 0 and row["seq_per_s"] > 0
        assert row["max_abs_diff"] is not None and row["max_abs_diff"] <= 1e-4  # same model, two implementations
    assert report["machine"]["threads"] == 1 and report["config"]["compare"] == ["hf"]
    assert res.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = bench.table_rows(report)
    assert len(rows) == 8 and all(len(r) == len(bench.TABLE_COLUMNS) for r in rows)


def test_bench_onnx_engine_against_the_checkpoint(tmp_path, tiny_checkpoints, glue_dir):
    from debx.exporters.export import ExportConfig, export_onnx

    ckpt = tiny_checkpoints["v3"]
    onnx_file = export_onnx(ExportConfig(ckpt, tmp_path / "m.onnx", attention="fast", data_dir=glue_dir,
                                         validate=False)).output
    res = run_bench(BenchConfig(engines=[onnx_file], compare=("pytorch",), seqs=(12,), threads=1, warmup=1, iters=2,
                                peak_rss=False))
    names = [e["name"] for e in res.report["engines"]]
    assert names == ["m.onnx", "debx-pytorch"]  # --compare pytorch found the checkpoint through the sidecar
    assert all(r["max_abs_diff"] <= 1e-4 for r in res.report["results"])


def test_optimum_without_optimum_fails_clearly(tmp_path, tiny_checkpoints, monkeypatch):
    monkeypatch.setattr(bench, "_optimum_in_process", lambda: False)
    monkeypatch.setattr(bench, "optimum_python", lambda: None)
    with pytest.raises(MissingDependencyError, match="scripts/optimum_env.sh"):
        bench.optimum_baselines(Path(tiny_checkpoints["v3"]), tmp_path)
    assert not any((tmp_path / "optimum").iterdir())  # nothing half-built left in the cache


def test_optimum_build_failure_is_reported_not_hidden(tmp_path, tiny_checkpoints, monkeypatch):
    monkeypatch.setattr(bench, "_optimum_in_process", lambda: False)
    monkeypatch.setattr(bench, "optimum_python", lambda: Path(sys.executable))

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="Traceback ...\nValueError: no optimum here\n")

    with pytest.raises(MissingDependencyError, match="no optimum here"):
        bench.optimum_baselines(Path(tiny_checkpoints["v3"]), tmp_path, runner=failing)


def test_optimum_baselines_are_cached_by_fingerprint(tmp_path, tiny_checkpoints, monkeypatch):
    calls = []
    monkeypatch.setattr(bench, "_optimum_in_process", lambda: False)
    monkeypatch.setattr(bench, "optimum_python", lambda: Path(sys.executable))

    def fake_build(cmd, **kw):  # stands in for the side venv: writes two files where it was told
        calls.append(cmd)
        out = Path(cmd[3])
        for sub in ("fp32", "int8"):
            (out / sub).mkdir(parents=True)
            (out / sub / "model.onnx").write_bytes(b"x")
        line = json.dumps({"fp32": str(out / "fp32/model.onnx"), "int8": str(out / "int8/model.onnx")})
        return subprocess.CompletedProcess(cmd, 0, stdout=f"log\nDEBX-OPTIMUM {line}\n", stderr="")

    ckpt = Path(tiny_checkpoints["v3"])
    first = bench.optimum_baselines(ckpt, tmp_path, runner=fake_build)
    second = bench.optimum_baselines(ckpt, tmp_path, runner=fake_build)
    assert len(calls) == 1 and first == second
    assert Path(first["fp32"]).is_file() and Path(first["int8"]).is_file()
    assert calls[0][-2:] == ["--task", "text-classification"]


@pytest.mark.parametrize("args, match", [
    (["--model", "/no/such/dir"], "not a checkpoint folder"),
    (["--engine", "/no/such.onnx"], "no such file"),
    (["--batch", "1,x"], "--batch"),
    (["--seq", "0"], "--seq"),
    ([], "nothing to benchmark"),
    (["--compare", "tensorflow", "--engine", __file__], "--compare"),
    (["--iters", "3", "--seconds", "1", "--engine", __file__], "not both"),
])
def test_bad_input_is_one_line(args, match):
    proc = subprocess.run([sys.executable, "-m", "debx", "bench", *args], capture_output=True, text=True,
                          cwd=str(ROOT), timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("debx: error:") and match in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("flag", ["--json", "--plot"])
def test_an_output_that_is_the_engine_is_refused(tmp_path, flag):
    engine = tmp_path / "m.onnx"
    engine.write_bytes(b"an engine the user keeps")
    proc = subprocess.run([sys.executable, "-m", "debx", "bench", "--engine", str(engine), flag,
                           str(tmp_path / "." / "m.onnx")], capture_output=True, text=True, cwd=str(ROOT), timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"debx: error: {flag}"), proc.stderr
    assert engine.read_bytes() == b"an engine the user keeps"


def test_sequence_longer_than_the_model_is_refused(tiny_checkpoints):
    # v1's fixture has absolute position embeddings (128); relative-only models take any length
    with pytest.raises(ConfigError, match="exceeds"):
        run_bench(BenchConfig(models=[tiny_checkpoints["v1"]], seqs=(4096,), iters=1))


def test_make_feeds_draws_ids_within_the_vocabulary():
    big = bench.make_feeds(4, 64, seed=2)
    assert big["input_ids"].max() < 1000 and big["input_ids"].min() >= 1
    assert np.array_equal(big["input_ids"], bench.make_feeds(4, 64, seed=2, vocab=1000)["input_ids"])  # as before
    small = bench.make_feeds(4, 64, seed=2, vocab=40)["input_ids"]
    assert small.max() < 40 and small[:, 1:].min() >= 5
    assert bench.feed_vocab([Engine("a", "x", None, vocab_size=300), Engine("b", "x", None)]) == 300
    assert bench.feed_vocab([Engine("a", "x", None, vocab_size=128100)]) == 1000
    with pytest.raises(ConfigError):
        bench.make_feeds(1, 4, vocab=1)


def test_bench_of_a_model_with_a_small_vocabulary(tmp_path):
    """A vocabulary under 1000 (e.g. `debx train --vocab-size 600`): the PyTorch model raised IndexError and ONNX
    Runtime 'Gather ... indices element out of data bounds' on ids drawn up to 1000 (issue 11)."""
    from debx.variants import build_checkpoint
    from debx.exporters.export import ExportConfig, export_onnx

    ckpt = build_checkpoint("v3", tmp_path / "v3-300", vocab_size=300)
    onnx_path = tmp_path / "v3-300.onnx"
    export_onnx(ExportConfig(checkpoint=ckpt, output=onnx_path, validate=False))
    assert bench.onnx_vocab_size(onnx_path) == 300
    res = run_bench(BenchConfig(models=[ckpt], engines=[onnx_path], batches=(2,), seqs=(48,), iters=1, warmup=1,
                                threads=1, peak_rss=False))
    assert res.report["input_ids_below"] == 300
    rows = res.report["results"]
    assert len(rows) == 2 and rows[1]["max_abs_diff"] < 1e-4


def test_an_exported_file_takes_the_lengths_its_model_takes(trained_like_checkpoints):
    """The sidecar's shapes.max_seq_len is the longest length validated at export, not a limit: a v3 graph takes any
    length (`debx bench --seq 700` on it was refused with '--seq 700 exceeds the 128-token limit'), a v1 graph with
    absolute positions stops at max_position_embeddings, a pinned sequence axis at its length."""
    validated = {"shapes": {"batch": "dynamic", "sequence": "dynamic", "max_seq_len": 128}}
    assert bench.file_length_limit(validated, trained_like_checkpoints["v3"]) is None
    assert bench.file_length_limit(validated, trained_like_checkpoints["v1"]) == 128
    assert bench.file_length_limit(validated, None) == 128  # source unknown: what was validated
    assert bench.file_length_limit({"shapes": {"sequence": 64, "max_seq_len": 64}}, trained_like_checkpoints["v3"]) == 64
    assert bench.file_length_limit({}, None) is None


@pytest.fixture(scope="module")
def fast_onnx(tmp_path_factory, tiny_checkpoints, glue_dir):
    """The tiny v3 exported with standard ops only (no custom op library to load)."""
    from debx.exporters.export import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("bench-memory") / "m.onnx"
    return export_onnx(ExportConfig(tiny_checkpoints["v3"], out, attention="fast", data_dir=glue_dir,
                                    validate=False)).output


def test_peak_rss_of_each_file_alone_in_a_child(fast_onnx, tmp_path):
    """Issue 14: `debx bench` reports each file's peak RSS (load + warm-up + runs, in a child process of its own) and
    its size on disk. The child's number is its own: 400 MiB held by this process do not show in it (getrusage's
    ru_maxrss survives execve and reported at least the parent's RSS), and an ONNX file pulls in no PyTorch."""
    ballast = np.ones(400 << 17)  # 400 MiB resident here
    res = run_bench(BenchConfig(engines=[fast_onnx], batches=(1, 2), seqs=(12,), threads=1, warmup=1, iters=2,
                                json_path=tmp_path / "bench.json"))
    del ballast
    entry = json.loads(res.json_path.read_text())["engines"][0]
    m = entry["memory"]
    assert 0 < m["imports_mb"] <= m["load_peak_mb"] <= m["peak_rss_mb"] < 400, m
    assert "onnxruntime" in m["libraries"] and "torch" not in m["libraries"], m["libraries"]
    assert entry["disk_mb"] == pytest.approx(fast_onnx.stat().st_size / 2**20, abs=0.05)
    (row,) = bench.memory_rows(res.report)
    assert len(row) == len(bench.MEMORY_COLUMNS) and row[0] == "m.onnx" and float(row[3]) >= float(row[2]) > 0
    assert "VmHWM" in res.report["method"]


def test_peak_rss_can_be_switched_off_and_a_failed_child_is_said(fast_onnx, tmp_path):
    res = run_bench(BenchConfig(engines=[fast_onnx], seqs=(8,), threads=1, warmup=1, iters=1, peak_rss=False))
    entry = res.report["engines"][0]
    assert entry["memory"] == {} and entry["disk_mb"] > 0
    assert bench.memory_rows(res.report)[0][2:4] == ["-", "-"]

    def crashed(cmd, **kw):
        return subprocess.CompletedProcess(cmd, -9, stdout="", stderr="loading...\nKilled\n")

    spec = {"kind": "onnxruntime", "path": str(fast_onnx)}
    assert bench.measure_peak_rss(spec, runner=crashed) == {"error": "exit -9: Killed"}


def test_size_on_disk_counts_external_weights(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((256, 256), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], [w])
    path = tmp_path / "ext.onnx"
    onnx.save_model(helper.make_model(graph), str(path), save_as_external_data=True, location="ext.weights",
                    size_threshold=0)
    total = path.stat().st_size + (tmp_path / "ext.weights").stat().st_size
    assert (tmp_path / "ext.weights").stat().st_size >= 256 * 256 * 4
    assert bench.disk_mb(path, onnx.load(str(path), load_external_data=False)) == pytest.approx(total / 2**20)
    assert bench.disk_mb(path) == pytest.approx(path.stat().st_size / 2**20)  # without the graph: the file alone


def test_cli_prints_the_memory_table(fast_onnx, monkeypatch, capsys):
    from cli_helpers import run_main

    code, out, err = run_main(monkeypatch, capsys, "bench", "-e", fast_onnx, "--seq", "8", "--iters", "1",
                              "--warmup", "1", "--threads", "1")
    assert code == 0, err
    assert "peak RSS MB, load + runs" in out and "on disk MB" in out


def test_a_graph_on_the_native_ops_loads_without_transformers_or_pytorch(tiny_checkpoints, glue_dir, tmp_path):
    """debx's runner registered the onnxruntime-extensions references for every graph with custom nodes, and that
    library imports transformers and PyTorch: about 230 MB resident for a graph that runs on the native ops only."""
    from debx.exporters.export import ExportConfig, export_onnx
    from debx.runtimes import native_ops

    if not native_ops.available():
        pytest.skip(f"native ops unavailable: {native_ops.unavailable_reason()}")
    debx_onnx = export_onnx(ExportConfig(tiny_checkpoints["v3"], tmp_path / "d.onnx", attention="debx",
                                         data_dir=glue_dir, validate=False)).output
    spec = {"name": "d", "kind": "onnxruntime", "path": str(debx_onnx), "threads": 1, "device": None,
            "provider": None, "shapes": [[1, 8]], "warmup": 1, "runs": 1, "seed": 0, "vocab": 100}
    m = bench.measure_peak_rss(spec)
    assert m.get("libraries") == ["onnxruntime"], m
