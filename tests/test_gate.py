"""The accuracy gate: vectorised bootstrap metrics, interval coverage, tolerance edges per mode, guid alignment,
the Markdown/PNG report, and `debx eval --reference --gate` exit codes on a broken and an identical candidate."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from debx import metrics
from debx.errors import ConfigError, DataError
from debx.gate import (GateConfig, align, allowed_drop, gate, gate_reports, metric_rows, paired_bootstrap,
                       rank_rows)
from debx.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def _paired(n: int, p_ref: float, p_cand: float, seed: int):
    """Binary labels with a reference right with probability p_ref and a candidate right with p_cand (correlated)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    u = rng.random(n)  # shared: the two models tend to fail on the same examples
    ref_ok = u < p_ref
    cand_ok = np.where(rng.random(n) < 0.8, u < p_cand, rng.random(n) < p_cand)
    return np.where(ref_ok, y, 1 - y), np.where(cand_ok, y, 1 - y), y


# ---------------------------------------------------------------------------------------------------------------------
# vectorised metrics == debx.metrics, row by row
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mcc"])
def test_row_metrics_match_debx_metrics_for_classes(metric):
    rng = np.random.default_rng(1)
    k = 3 if metric == "mcc" else 2
    y = rng.integers(0, k, 120)
    p = np.where(rng.random(120) < 0.6, y, rng.integers(0, k, 120))
    idx = rng.integers(0, 120, size=(30, 120))
    idx[0] = 0  # a degenerate resample: one example repeated (constant predictions and labels)
    rows = metric_rows(metric, p, y, idx)
    expected = [metrics.METRICS[metric].fn(p[i], y[i]) for i in idx]
    np.testing.assert_allclose(rows, expected, atol=1e-9)


@pytest.mark.parametrize("metric", ["pearson", "spearman"])
def test_row_metrics_match_debx_metrics_for_scores_with_ties(metric):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 6, 90).astype(float)
    p = np.round(y + rng.normal(0, 1.2, 90), 1)
    idx = rng.integers(0, 90, size=(25, 90))  # resampling creates many ties
    rows = metric_rows(metric, p, y, idx)
    expected = [metrics.METRICS[metric].fn(p[i], y[i]) for i in idx]
    np.testing.assert_allclose(rows, expected, atol=1e-9)


def test_rank_rows_average_ties():
    x = np.array([[3.0, 1.0, 3.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    np.testing.assert_array_equal(rank_rows(x), [[3.5, 1.0, 3.5, 2.0], [2.5, 2.5, 2.5, 2.5]])


# ---------------------------------------------------------------------------------------------------------------------
# the interval
# ---------------------------------------------------------------------------------------------------------------------


def test_bootstrap_interval_covers_the_true_delta():
    """Population delta is -2 points (83% vs 85%); 95% intervals from samples of 800 cover it most of the time."""
    trials, covered, widths = 40, 0, []
    for seed in range(trials):
        ref, cand, y = _paired(800, 0.85, 0.83, seed)
        lo, hi = paired_bootstrap("accuracy", ref, cand, y, resamples=400, seed=seed)
        observed = metrics.accuracy(cand, y) - metrics.accuracy(ref, y)
        assert lo <= observed <= hi
        covered += lo <= -2.0 <= hi
        widths.append(hi - lo)
    assert covered >= 0.85 * trials
    assert 0.5 < np.mean(widths) < 6.0  # paired: far narrower than two independent accuracy intervals


def test_bootstrap_is_seeded_and_zero_for_identical_predictions():
    ref, cand, y = _paired(300, 0.8, 0.78, 0)
    assert paired_bootstrap("f1", ref, cand, y, seed=5) == paired_bootstrap("f1", ref, cand, y, seed=5)
    assert paired_bootstrap("mcc", ref, ref, y) == (0.0, 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# decisions at the edges
# ---------------------------------------------------------------------------------------------------------------------


def _with_accuracy(y: np.ndarray, correct: int) -> np.ndarray:
    p = 1 - y
    p[:correct] = y[:correct]
    return p


@pytest.mark.parametrize("cand_correct, passed", [(897, True), (896, False), (900, True), (950, True)])
def test_paper_gate_edges_sst2(cand_correct, passed):
    y = np.random.default_rng(0).integers(0, 2, 1000)
    ref = _with_accuracy(y, 900)  # 90.0
    res = gate(get_task("sst2"), ref, _with_accuracy(y, cand_correct), y, GateConfig(resamples=50))
    assert res.allowed_drop == pytest.approx(0.3)
    assert res.passed is passed and res.verdict == ("PASS" if passed else "FAIL")
    assert res.delta == pytest.approx((cand_correct - 900) / 10)


def test_wnli_allows_no_drop_and_tolerance_overrides_the_paper():
    y = np.random.default_rng(0).integers(0, 2, 100)
    ref, worse = _with_accuracy(y, 60), _with_accuracy(y, 59)
    wnli = get_task("wnli")
    assert gate(wnli, ref, ref, y, GateConfig(resamples=20)).passed
    assert not gate(wnli, ref, worse, y, GateConfig(resamples=20)).passed
    assert gate(wnli, ref, worse, y, GateConfig(tolerance=1.0, resamples=20)).passed


def test_relative_mode_is_a_share_of_the_reference():
    task = get_task("rte")
    assert allowed_drop(task, 80.0, GateConfig(mode="relative")) == pytest.approx(0.8)
    assert allowed_drop(task, 80.0, GateConfig(mode="relative", tolerance=2.0)) == pytest.approx(1.6)
    y = np.random.default_rng(0).integers(0, 2, 1000)
    ref = _with_accuracy(y, 800)
    assert gate(task, ref, _with_accuracy(y, 792), y, GateConfig(mode="relative", resamples=20)).passed
    assert not gate(task, ref, _with_accuracy(y, 791), y, GateConfig(mode="relative", resamples=20)).passed


def test_none_mode_reports_without_gating():
    y = np.random.default_rng(0).integers(0, 2, 100)
    res = gate(get_task("mrpc"), y, 1 - y, y, GateConfig(mode="none", resamples=20))
    assert res.passed and res.allowed_drop is None and res.changed == 1.0 and res.delta == -100.0


def test_regression_gate_uses_pearson_and_counts_changed_scores():
    rng = np.random.default_rng(3)
    y = rng.uniform(0, 5, 400)
    ref = y + rng.normal(0, 0.5, 400)
    cand = ref + rng.normal(0, 1e-3, 400)  # rounding noise: not a change
    cand[:100] += rng.choice([-1, 1], 100) * rng.uniform(1.0, 3.0, 100)
    res = gate(get_task("stsb"), ref, cand, y, GateConfig(resamples=100))
    assert res.metric == "pearson" and res.changed == pytest.approx(0.25) and not res.passed
    assert res.ci_low <= res.delta <= res.ci_high


def test_bad_gate_settings():
    with pytest.raises(ConfigError, match="--gate"):
        GateConfig(mode="strict")
    with pytest.raises(ConfigError, match="tolerance"):
        GateConfig(tolerance=-1)


# ---------------------------------------------------------------------------------------------------------------------
# alignment of reports by guid
# ---------------------------------------------------------------------------------------------------------------------


def test_align_by_guid_keeps_the_candidates_rows_in_its_order():
    ref, cand, y, guids = align(["c", "a", "b", "z"], [30, 10, 20, 99], ["a", "b", "c", "x"], [1, 2, 3, 4],
                                [7, 8, 9, 6])
    assert guids == ["a", "b", "c"]
    assert ref.tolist() == [10, 20, 30] and cand.tolist() == [1, 2, 3] and y.tolist() == [7, 8, 9]
    with pytest.raises(DataError, match="share no examples"):
        align(["q"], [1], ["a"], [1], [1])


def test_gate_reports_checks_task_and_split():
    task = get_task("sst2")
    cand = {"task": "sst2", "split": "dev", "predictions": [1, 0, 1], "guids": ["a", "b", "c"]}
    with pytest.raises(DataError, match="task"):
        gate_reports(task, {**cand, "task": "rte"}, cand, np.array([1, 0, 1]))
    with pytest.raises(DataError, match="split"):
        gate_reports(task, {**cand, "split": "train"}, cand, np.array([1, 0, 1]))
    with pytest.raises(DataError, match="predictions"):
        gate_reports(task, {"guids": ["a"]}, cand, np.array([1, 0, 1]))
    res = gate_reports(task, {**cand, "guids": ["c", "b", "a"], "predictions": [1, 0, 0]}, cand, np.array([1, 0, 1]),
                       GateConfig(resamples=10))
    assert res.n == 3 and res.changed == pytest.approx(1 / 3)


def test_markdown_and_png(tmp_path):
    from debx.report import markdown, plot

    y = np.random.default_rng(0).integers(0, 2, 200)
    results = [gate(get_task("sst2"), y, _with_accuracy(y, 190), y, GateConfig(resamples=50), "pytorch fp32", "int8"),
               gate(get_task("sst2"), y, y, y, GateConfig(resamples=50), "pytorch fp32", "fp16")]
    text = markdown(results, ["12 dev rows were used to calibrate"])
    assert "| sst2 | accuracy | 100.00 (pytorch fp32) | 95.00 (int8) | -5.00 |" in text
    assert "**FAIL**" in text and "**PASS**" in text and "12 dev rows" in text
    plot(tmp_path / "gate.png", results, title="t")
    assert (tmp_path / "gate.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------------
# debx eval --reference --gate: the real CLI
# ---------------------------------------------------------------------------------------------------------------------




def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "debx", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def gate_setup(tmp_path_factory, tiny_checkpoints, glue_dir):
    """A checkpoint, its FP32 export, a copy of the export with the classifier negated (every binary prediction
    flips), and an SST-2-layout dev set of 40 real sentences labelled with the checkpoint's own predictions (so the
    reference scores 100% and the broken copy 0%)."""
    import onnx
    from onnx import numpy_helper

    from debx.evaluate import EvalConfig, evaluate
    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("gate")
    ckpt = tiny_checkpoints["v3"]
    good = export_onnx(ExportConfig(checkpoint=ckpt, output=root / "model.onnx", validate=False)).output
    model = onnx.load(str(good))
    for t in model.graph.initializer:
        if t.name in ("classifier.weight", "classifier.bias"):
            t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
    broken = root / "broken.onnx"
    onnx.save(model, str(broken))
    (root / "broken.onnx.json").write_text((root / "model.onnx.json").read_text())

    res = evaluate(EvalConfig(task="sst2", engine=ckpt, data_dir=glue_dir, limit=40, progress=False))
    data = root / "glue" / "SST-2"
    data.mkdir(parents=True)
    sentences = [line.split("\t")[0] for line in (glue_dir / "SST-2" / "dev.tsv").read_text().splitlines()[1:41]]
    with open(data / "dev.tsv", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writerow(["sentence", "label"])
        for s, p in zip(sentences, res.predictions):
            f.write(f"{s}\t{int(p)}\n")
    return {"ckpt": ckpt, "good": good, "broken": broken, "data": data.parent, "root": root}


def _eval_command(**kw):
    """debx eval's Typer function called in-process (every option spelled out, as Typer would pass it)."""
    from debx.cli.eval import command

    args = dict(task="sst2", model=None, engine=None, data_dir=None, split="dev", tokenizer=None, batch_size=32,
                max_seq_len=None, overflow="truncate", threads=1, provider=None, device=None, plugins=[], limit=None,
                report=None, reference=None, gate=None, tolerance=None, gi_max_scope=None)
    args.update(kw)
    return command(**args)


def test_eval_gate_fails_a_broken_candidate_and_writes_json_md_png(gate_setup, capsys):
    from debx.errors import GateFailed

    s = gate_setup
    report = s["root"] / "broken-report.json"
    with pytest.raises(GateFailed, match=r"gate paper: sst2 accuracy 0.00 vs reference 100.00"):
        _eval_command(engine=s["broken"], data_dir=s["data"], reference=s["ckpt"], gate="paper", report=report)
    assert "**FAIL**" in capsys.readouterr().out
    data = json.loads(report.read_text())
    assert data["gate"]["verdict"] == "FAIL" and data["gate"]["reference"] == 100.0 and data["gate"]["candidate"] == 0.0
    assert data["gate"]["changed"] == 1.0 and data["reference"]["metrics"] == {"accuracy": 100.0}
    assert "**FAIL**" in report.with_suffix(".md").read_text()
    assert report.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_eval_gate_passes_an_identical_candidate_against_a_report_reference(gate_setup, capsys):
    from debx.evaluate import EvalConfig, evaluate, write_report

    s = gate_setup
    ref_report = s["root"] / "ref.json"
    write_report(evaluate(EvalConfig(task="sst2", engine=s["ckpt"], data_dir=s["data"], progress=False)).report,
                 ref_report)
    _eval_command(engine=s["good"], data_dir=s["data"], reference=ref_report, gate="relative")
    out = capsys.readouterr().out
    assert "**PASS**" in out and "| 0.0% |" in out  # not one prediction changed


@pytest.mark.slow
def test_cli_exit_codes_broken_1_identical_0(gate_setup):
    s = gate_setup
    r = run_cli("eval", "--task", "sst2", "--engine", s["broken"], "--data-dir", s["data"], "--reference", s["ckpt"])
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().startswith("debx: error: gate paper") and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("eval", "--task", "sst2", "--engine", s["good"], "--data-dir", s["data"], "--reference", s["ckpt"])
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout


def test_eval_gate_bad_input_is_one_line(gate_setup, tmp_path):
    s = gate_setup
    r = run_cli("eval", "--task", "sst2", "--engine", s["good"], "--data-dir", s["data"], "--gate", "paper")
    assert r.returncode == 2
    assert r.stderr.strip() == "debx: error: --gate/--tolerance need --reference CKPT_DIR|MODEL|report.json"
    r = run_cli("eval", "--task", "sst2", "--engine", s["good"], "--data-dir", s["data"], "--reference",
                tmp_path / "nope.json", "--report", tmp_path / "out.json")
    assert r.returncode == 2 and "no such file" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()
