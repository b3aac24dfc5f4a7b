"""giMLP's gate threshold scope (issue 11, item 8): the checkpoint's batch-wide max (faithful to the reference code,
so a request's output depends on the others batched with it) or per example, chosen by `--gi-max-scope` on export and
eval, recorded in the sidecar, warned about when a batch-wide graph is exported, and measurable by the gate."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from debx.errors import ConfigError


def _rows(cfg, n: int = 12, batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, cfg.vocab_size, (batch, n)).astype(np.int64)
    ids[:, 0] = 1
    ids[1:] *= 3  # other rows, with other activations (and another batch maximum)
    ids %= cfg.vocab_size
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def _alone_vs_batched(infer, feeds) -> float:
    """Max |row 0 alone - row 0 batched with the others|."""
    alone = infer({k: v[:1] for k, v in feeds.items()})
    batched = infer(feeds)[:1]
    return float(np.abs(alone - batched).max())


@pytest.fixture(scope="module")
def gimlp_exports(tmp_path_factory, tiny_checkpoints):
    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("gimlp")
    ckpt = tiny_checkpoints["gimlp"]
    return {scope: export_onnx(ExportConfig(ckpt, root / f"{scope or 'default'}.onnx", attention="fast",
                                            gi_max_scope=scope, validate=False))
            for scope in (None, "example")}


def test_export_records_the_scope_and_warns_about_batch_wide_graphs(gimlp_exports):
    default, example = gimlp_exports[None], gimlp_exports["example"]
    assert json.loads(default.sidecar.read_text())["gi_max_scope"] == "batch"  # the checkpoint's own
    assert json.loads(example.sidecar.read_text())["gi_max_scope"] == "example"
    assert len(default.warnings) == 1 and "--gi-max-scope example" in default.warnings[0]
    assert example.warnings == []


def test_per_example_graph_does_not_depend_on_the_batch(gimlp_exports, tiny_checkpoints):
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner
    from debx.runtimes.torch import TorchRunner

    with TorchRunner(tiny_checkpoints["gimlp"]) as ref:
        feeds = _rows(ref.config)
    diffs = {}
    for scope, res in gimlp_exports.items():
        with OnnxRuntimeRunner(res.output, threads=1) as ort:
            diffs[scope] = _alone_vs_batched(lambda f: ort.infer(f)["logits"], feeds)
    assert diffs[None] > 1e-3, "the batch-wide graph mixes requests (this is why it is warned about)"
    assert diffs["example"] <= 1e-6


def test_pytorch_runner_takes_the_scope(tiny_checkpoints):
    from debx.runtimes.torch import TorchRunner

    diffs = {}
    for scope in ("batch", "example"):
        with TorchRunner(tiny_checkpoints["gimlp"], gi_max_scope=scope) as r:
            feeds = _rows(r.config)
            diffs[scope] = _alone_vs_batched(lambda f: r.infer(f)["logits"], feeds)
            assert r.describe()["gi_max_scope"] == scope
    assert diffs["batch"] > 1e-3 and diffs["example"] <= 1e-6


def test_validate_uses_the_scope_the_file_was_exported_with(gimlp_exports, glue_dir):
    """`debx validate` loads the checkpoint again: it must compare with the exported scope, not config.json's."""
    from debx.exporters.validate import validate_onnx

    res = gimlp_exports["example"]
    report = validate_onnx(res.output, res.metadata["source"]["checkpoint"], data_dir=glue_dir)
    assert report.ok and report.max_abs_diff <= 1e-4


@pytest.mark.parametrize("variant, scope, match", [
    ("gimlp", "exampel", "--gi-max-scope 'exampel': choose one of batch, example"),
    ("v3", "example", "--gi-max-scope applies to gate-with-inhibition \\(giMLP\\) models only"),
])
def test_bad_scope_requests_are_one_line(tmp_path, tiny_checkpoints, variant, scope, match):
    from debx.evaluate import EvalConfig, evaluate
    from debx.exporters.export import ExportConfig, export_onnx

    with pytest.raises(ConfigError, match=match):
        export_onnx(ExportConfig(tiny_checkpoints[variant], tmp_path / "m.onnx", gi_max_scope=scope, validate=False))
    with pytest.raises(ConfigError, match=match):
        evaluate(EvalConfig(task="sst2", engine=tiny_checkpoints[variant], gi_max_scope=scope, limit=4,
                            progress=False))
    assert list(tmp_path.iterdir()) == []


def test_eval_of_an_export_must_match_its_scope(gimlp_exports, glue_dir):
    from debx.evaluate import EvalConfig, evaluate

    with pytest.raises(ConfigError, match="was exported with gi_max_scope batch, which its graph fixes"):
        evaluate(EvalConfig(task="sst2", engine=gimlp_exports[None].output, data_dir=glue_dir, gi_max_scope="example",
                            limit=4, progress=False))
    res = evaluate(EvalConfig(task="sst2", engine=gimlp_exports["example"].output, data_dir=glue_dir,
                              gi_max_scope="example", limit=4, progress=False))
    assert res.report["n_examples"] == 4


def test_gate_measures_the_per_example_cost(tiny_checkpoints, glue_dir, tmp_path, monkeypatch, capsys):
    """`debx eval --model CKPT --gi-max-scope example --reference CKPT`: the candidate runs per example, the reference
    as the checkpoint says (batch-wide), on the same rows."""
    from debx.cli import main as debx_main

    ckpt = tiny_checkpoints["gimlp"]
    report = tmp_path / "gi.json"
    monkeypatch.setattr(sys, "argv", ["debx", "eval", "--task", "sst2", "--model", str(ckpt), "--data-dir",
                                      str(glue_dir), "--gi-max-scope", "example", "--reference", str(ckpt),
                                      "--limit", "32", "--batch-size", "8", "--report", str(report)])
    with pytest.raises(SystemExit) as e:
        debx_main()
    out = capsys.readouterr().out
    assert (e.value.code or 0) == 0, out
    assert "accuracy gate (paper)" in out and "| sst2 | accuracy |" in out
    cand = json.loads(report.read_text())
    assert cand["runner"]["gi_max_scope"] == "example" and "gate" in cand


def test_export_cli_prints_the_warning_on_one_line(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    from debx.cli import main as debx_main

    monkeypatch.setattr(sys, "argv", ["debx", "export", str(tiny_checkpoints["gimlp"]), "-o", str(tmp_path / "g.onnx"),
                                      "--attention", "fast"])
    with pytest.raises(SystemExit) as e:
        debx_main()
    out = capsys.readouterr().out
    assert (e.value.code or 0) == 0
    lines = [ln for ln in out.splitlines() if "warning:" in ln]
    assert len(lines) == 1 and "gi_max_scope batch" in lines[0] and "--gi-max-scope example" in lines[0], out
