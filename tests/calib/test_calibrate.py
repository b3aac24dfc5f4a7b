"""`debx calibrate` end to end: INT8 and FP16 artifacts and their sidecar, dev-row exclusion in later evaluations,
plugin graphs, --auto records, atomic failure, and the real CLI's one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from debx.calib.calibrate import CalibrateConfig, calibrate
from debx.calib.ranges import Ranges
from debx.calib.sensitivity import AutoConfig
from debx.calib.trt_cache import read_cache
from debx.errors import ConfigError, GateFailed
from debx.evaluate import EvalConfig, candidate_gate, evaluate, gate_notes
from debx.gate import GateConfig

ROOT = Path(__file__).resolve().parents[2]


def _cfg(exports, glue_dir, out, name="v3", **kw):
    base = dict(model=exports[name], output=out, task="sst2", data_dir=glue_dir, method="minmax", num_samples=16,
                threads=1)
    base.update(kw)
    return CalibrateConfig(**base)


def _files(out: Path) -> set[str]:
    return {p.name for p in out.parent.iterdir()}


def test_int8_artifacts_sidecar_ranges_and_cache(exports, glue_dir, tmp_path):
    out = tmp_path / "v3.int8.onnx"
    res = calibrate(_cfg(exports, glue_dir, out))
    assert _files(out) == {"v3.int8.onnx", "v3.int8.onnx.json", "v3.int8.onnx.ranges.json", "v3.int8.onnx.calib.cache"}
    side = json.loads(res.sidecar.read_text())
    export_side = json.loads(Path(str(exports["v3"]) + ".json").read_text())
    assert side["precision"] == "int8" and side["source"] == export_side["source"]
    assert side["attention"] == "onnx" and side["variant"] == export_side["variant"]
    cal = side["calibration"]
    assert cal["task"] == "sst2" and cal["split"] == "train" and cal["method"] == "minmax"
    assert cal["num_samples"] == len(cal["rows"]) == 16 and cal["trt_cache"] == "v3.int8.onnx.calib.cache"
    q = side["quantization"]
    assert q["summary"]["QuantizeLinear"] == 14 and len(q["placement"]["quantized"]) == 14
    assert side["parity"]["argmax_agreement"] >= 0.9 and side["parent"]["precision"] == "fp32"
    ranges = Ranges.load(res.ranges)
    code, algorithm, scales = read_cache(res.trt_cache)
    assert (code, algorithm) == (101401, "EntropyCalibration2")
    assert scales == pytest.approx({k: r.amax / 127 for k, r in ranges.tensors.items() if r.amax > 0}, rel=1e-6)
    model = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    report = evaluate(EvalConfig(task="sst2", engine=out, data_dir=glue_dir, limit=24, progress=False)).report
    assert report["engine"]["precision"] == "int8" and report["n_examples"] == 24
    assert report["excluded_calibration_rows"] == 0  # calibrated on train


def test_dev_calibration_rows_are_excluded_and_reported(exports, glue_dir, tmp_path):
    out = tmp_path / "v3.rte.int8.onnx"
    res = calibrate(_cfg(exports, glue_dir, out, task="rte", calib_split="dev", num_samples=12))
    rows = set(res.metadata["calibration"]["rows"])
    assert len(rows) == 12 and all(r.startswith("dev.tsv:") for r in rows)
    result = evaluate(EvalConfig(task="rte", engine=out, data_dir=glue_dir, progress=False))
    assert result.report["excluded_calibration_rows"] == 12
    assert not rows & set(result.guids) and result.report["n_examples"] == 277 - 12
    assert any("used to calibrate" in n for n in gate_notes(result.report))
    ref = evaluate(EvalConfig(task="rte", engine=exports["v3"], data_dir=glue_dir, progress=False))
    assert ref.report["n_examples"] == 277  # the FP32 export has no calibration rows


def test_fp16_artifacts_and_keep_list(exports, glue_dir, tmp_path):
    out = tmp_path / "v2.fp16.onnx"
    res = calibrate(_cfg(exports, glue_dir, out, name="v2", precision="fp16", task="mrpc"))
    assert _files(out) == {"v2.fp16.onnx", "v2.fp16.onnx.json", "v2.fp16.onnx.ranges.json"}
    side = res.metadata
    assert side["precision"] == "fp16" and side["calibration"]["trt_cache"] is None
    kept = side["fp16"]["kept"]
    assert kept and all(k["op"] == "LayerNormalization" and k["reason"].startswith("policy") for k in kept)
    assert side["parity"]["max_abs_diff"] < 5e-2
    batch = evaluate(EvalConfig(task="mrpc", engine=out, data_dir=glue_dir, limit=16, progress=False))
    assert batch.report["engine"]["precision"] == "fp16"


def test_plugin_graph_int8(exports, glue_dir, tmp_path):
    out = tmp_path / "v3-debx.int8.onnx"
    res = calibrate(_cfg(exports, glue_dir, out, name="v3-debx"))
    assert "keep their precision" in res.metadata["custom_nodes"]
    model = onnx.load(str(out))
    assert sum(n.op_type == "DebxDisentangledAttention" for n in model.graph.node) == 2
    assert evaluate(EvalConfig(task="sst2", engine=out, data_dir=glue_dir, limit=8, progress=False)).report["n_examples"] == 8


def test_auto_records_its_steps(exports, glue_dir, tmp_path):
    out = tmp_path / "v3.auto.int8.onnx"
    cfg = _cfg(exports, glue_dir, out, auto=True, auto_cfg=AutoConfig(eval_limit=30))
    res = calibrate(cfg, evaluator=candidate_gate(cfg, GateConfig(mode="relative", tolerance=50.0)))
    auto = res.metadata["auto"]
    assert auto["passed"] and len(auto["steps"]) == 1 and auto["steps"][0]["passed"]
    assert auto["steps"][0]["quantized_nodes"] == 14 and len(auto["sensitivity"]) == 14
    assert auto["gate"] == "relative" and not list(tmp_path.glob(".*tmp*"))


def test_auto_failure_leaves_nothing_behind(exports, glue_dir, tmp_path, monkeypatch):
    import debx.calib.sensitivity as sens

    def never_passes(fp32_model, ranges, policy, batches, evaluate_candidate, cfg, work_dir, threads=None,
                     log=lambda s: None):
        from debx.calib.qdq import quantize_int8

        model, placement = quantize_int8(fp32_model, ranges, policy, work_dir)
        step = {"step": 0, "float_nodes": [], "metric": "accuracy", "delta": -3.0, "allowed_drop": 0.3,
                "passed": False}
        return sens.AutoResult(False, policy, model, placement, [step], {})

    monkeypatch.setattr(sens, "auto_fallback", never_passes)
    out = tmp_path / "v3.fail.int8.onnx"
    cfg = _cfg(exports, glue_dir, out, auto=True, auto_cfg=AutoConfig(eval_limit=8))
    with pytest.raises(GateFailed, match="no model written"):
        calibrate(cfg, evaluator=candidate_gate(cfg, GateConfig()))
    assert list(tmp_path.iterdir()) == []


def test_bad_requests(exports, glue_dir, tmp_path):
    with pytest.raises(ConfigError, match="no such ONNX file"):
        calibrate(_cfg(exports, glue_dir, tmp_path / "o.onnx", model=tmp_path / "missing.onnx"))
    with pytest.raises(ConfigError, match="--method"):
        _cfg(exports, glue_dir, tmp_path / "o.onnx", method="kl")
    with pytest.raises(ConfigError, match="--precision"):
        _cfg(exports, glue_dir, tmp_path / "o.onnx", precision="int4")
    with pytest.raises(ConfigError, match="must end in .onnx"):
        calibrate(_cfg(exports, glue_dir, tmp_path / "o.bin"))
    with pytest.raises(ConfigError, match="differ"):
        calibrate(_cfg(exports, glue_dir, exports["v3"]))
    int8 = tmp_path / "q.onnx"
    calibrate(_cfg(exports, glue_dir, int8, num_samples=4))
    with pytest.raises(ConfigError, match="already quantized"):
        calibrate(_cfg(exports, glue_dir, tmp_path / "qq.onnx", model=int8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.onnx", "q.onnx.calib.cache", "q.onnx.json",
                                                           "q.onnx.ranges.json"]


# ---------------------------------------------------------------------------------------------------------------------
# the real CLI
# ---------------------------------------------------------------------------------------------------------------------


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "debx", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_cli_bad_input_is_one_line_and_writes_nothing(exports, glue_dir, tmp_path):
    out = tmp_path / "out.int8.onnx"
    r = run_cli("calibrate", tmp_path / "missing.onnx", "--task", "sst2", "--data-dir", glue_dir, "-o", out)
    assert r.returncode == 2 and r.stderr == f"debx: error: {tmp_path / 'missing.onnx'}: no such ONNX file\n"
    r = run_cli("calibrate", exports["v3"], "--task", "sst2", "--data-dir", glue_dir, "-o", out, "--method", "kl")
    assert r.returncode == 2 and r.stderr == "debx: error: --method 'kl': choose one of entropy, percentile, minmax\n"
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    r = run_cli("calibrate", tmp_path / "junk.onnx", "--task", "sst2", "--data-dir", glue_dir, "-o", out)
    assert r.returncode == 2 and "not a readable ONNX model" in r.stderr and r.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.onnx"]


def test_cli_auto_gates_with_the_evaluator_it_builds(exports, glue_dir, tmp_path):
    """The CLI builds the --auto evaluator (debx eval + the gate) and hands it to calibrate: calib/ imports neither."""
    out = tmp_path / "v3.auto.int8.onnx"
    r = run_cli("calibrate", exports["v3"], "--task", "sst2", "--data-dir", glue_dir, "-o", out, "--method", "minmax",
                "--num-samples", "8", "--auto", "--gate", "relative", "--tolerance", "50", "--eval-limit", "16",
                "--threads", "1")
    assert r.returncode == 0, r.stderr
    auto = json.loads(out.with_name(out.name + ".json").read_text())["auto"]
    assert auto["gate"] == "relative" and auto["passed"] and auto["steps"][0]["passed"]
    assert not list(tmp_path.glob("*candidate*"))


def test_auto_without_an_evaluator_is_refused_before_any_work(exports, glue_dir, tmp_path):
    with pytest.raises(ValueError, match="needs an evaluator"):
        calibrate(_cfg(exports, glue_dir, tmp_path / "o.onnx", auto=True))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_calibrate_then_gate(exports, glue_dir, tiny_checkpoints, tmp_path):
    out = tmp_path / "v2.int8.onnx"
    r = run_cli("calibrate", exports["v2"], "--task", "mrpc", "--data-dir", glue_dir, "-o", out, "--method",
                "percentile", "--percentile", "99.9", "--num-samples", "24", "--calib-split", "dev")
    assert r.returncode == 0, r.stderr
    assert "excluded from every `debx eval`" in r.stdout.replace("\n", " ")
    assert json.loads((tmp_path / "v2.int8.onnx.json").read_text())["calibration"]["method"] == "percentile"
    report = tmp_path / "gate.json"
    r = run_cli("eval", "--task", "mrpc", "--engine", out, "--data-dir", glue_dir, "--reference",
                tiny_checkpoints["v2"], "--gate", "none", "--report", report)
    assert r.returncode == 0, r.stderr
    data = json.loads(report.read_text())
    assert data["excluded_calibration_rows"] == 24 and data["gate"]["n"] == 408 - 24
    assert "used to calibrate" in report.with_suffix(".md").read_text()


def test_an_interrupted_calibration_leaves_the_previous_set_complete(exports, glue_dir, tmp_path, monkeypatch):
    """The five files (graph, weights, sidecar, ranges, TensorRT cache) are committed as one unit: an interrupt in
    the middle of the renames leaves the previous set exactly as it was; the next run replaces all of it and removes
    what the new set no longer has (the old weights, the INT8-only cache)."""
    import debx.calib.ranges

    monkeypatch.setattr(debx.calib.ranges, "LARGE_MODEL_BYTES", 0)  # weights in an external file, as for big models
    out = tmp_path / "m.onnx"
    calibrate(_cfg(exports, glue_dir, out))
    old = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    old_data = json.loads(old["m.onnx.json"])["external_data"]
    assert set(old) == {"m.onnx", old_data, "m.onnx.json", "m.onnx.ranges.json", "m.onnx.calib.cache"}

    real, calls = os.replace, []

    def replace(a, b):
        calls.append(Path(b))
        if Path(b) == out and calls.count(out) == 1:  # the commit's last rename: everything else is in place
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        calibrate(_cfg(exports, glue_dir, out, precision="fp16"))
    monkeypatch.setattr(os, "replace", real)
    assert {c.name for c in calls} >= {"m.onnx.ranges.json", "m.onnx.json", "m.onnx"}
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == old

    res = calibrate(_cfg(exports, glue_dir, out, precision="fp16"))
    new_data = res.metadata["external_data"]
    assert new_data != old_data and _files(out) == {"m.onnx", new_data, "m.onnx.json", "m.onnx.ranges.json"}
    assert onnx.load(str(out)).graph.initializer[0].data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)


def test_api_calibrate_auto_builds_the_evaluator(exports, glue_dir, tmp_path):
    """`from debx import calibrate` with auto=True gates like the CLI (gate/tolerance keywords), writes the model."""
    from debx import calibrate as api_calibrate

    out = tmp_path / "v3.api.int8.onnx"
    res = api_calibrate(exports["v3"], out, "sst2", data_dir=glue_dir, method="minmax", num_samples=8, threads=1,
                        auto=True, gate="relative", tolerance=50.0, auto_cfg=AutoConfig(eval_limit=16))
    assert res.output == out.resolve() and res.metadata["auto"]["gate"] == "relative" and res.metadata["auto"]["passed"]
