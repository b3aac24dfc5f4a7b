"""Provenance: one reader of "which checkpoint made this artifact", and `validate`, `eval`, `bench` and `build` saying
plainly when an artifact is stale (its checkpoint changed since, or it is compared with another one); `eval --report`
records the artifact's own source (issue 11, item 6)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from debx.artifacts import Source, artifact_source, stale_reason
from cli_helpers import run_main as main  # noqa: E402 (tests/ is on sys.path)




def test_one_reader_for_every_sidecar_spelling(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    side = model.with_name("m.onnx.json")
    for source, expected in [
        ({"checkpoint": "/ck", "fingerprint": "abc"}, Source(Path("/ck"), "abc")),  # export (and carried over)
        ({"path": "/tok"}, Source(Path("/tok"), None)),  # older calibrate sidecars
        ("/ck", Source(Path("/ck"), None)),
        (None, Source(None, None)),
    ]:
        side.write_text(json.dumps({"source": source}))
        assert artifact_source(model) == expected
    from debx.evaluate import source_checkpoint

    side.write_text(json.dumps({"source": {"path": "/tok"}}))
    assert source_checkpoint(model, json.loads(side.read_text())) == Path("/tok")


@pytest.fixture(scope="module")
def stale(tmp_path_factory, tiny_checkpoints, glue_dir):
    """(onnx, checkpoint, other): m.onnx exported from `checkpoint`, whose weights were then changed in place (a
    retrained model saved over the old one); `other` is another checkpoint of the same shape."""
    import torch
    from safetensors.torch import load_file, save_file

    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("provenance")
    ckpt = root / "ckpt"
    shutil.copytree(tiny_checkpoints["v3"], ckpt)
    out = root / "m.onnx"
    export_onnx(ExportConfig(checkpoint=ckpt, output=out, data_dir=glue_dir))
    weights = load_file(str(ckpt / "model.safetensors"))
    torch.manual_seed(0)
    weights = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return out, ckpt, tiny_checkpoints["gimlp"]


def test_stale_reason(stale, tiny_checkpoints):
    onnx, ckpt, other = stale
    recorded = artifact_source(onnx).fingerprint
    assert f"m.onnx is stale: {ckpt} has changed since m.onnx was made from it (fingerprint {recorded} then" in \
        stale_reason(onnx)
    assert f"m.onnx is stale for {other}: it was made from {ckpt}" in stale_reason(onnx, other)
    fresh = onnx.with_name("fresh.onnx")
    shutil.copy(onnx, fresh)
    side = json.loads(onnx.with_name("m.onnx.json").read_text())
    from debx.checkpoint import fingerprint

    side["source"]["fingerprint"] = fingerprint(ckpt)
    fresh.with_name("fresh.onnx.json").write_text(json.dumps(side))
    assert stale_reason(fresh) is None and stale_reason(fresh, ckpt) is None


def test_validate_says_the_file_is_stale(stale, glue_dir, monkeypatch, capsys):
    onnx, ckpt, _ = stale
    for extra in ([], ["--model", ckpt]):
        code, _, err = main(monkeypatch, capsys, "validate", onnx, "--data-dir", glue_dir, *extra)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"debx: error: m.onnx is stale: {ckpt} has changed since m.onnx was made from it"), err
        assert "validation failed" in err


def test_eval_warns_and_reports_the_artifacts_own_source(stale, tmp_path, glue_dir, monkeypatch, capsys):
    onnx, ckpt, other = stale
    report = tmp_path / "r.json"
    code, out, err = main(monkeypatch, capsys, "eval", "--task", "sst2", "--engine", onnx, "--data-dir", glue_dir,
                          "--limit", "8", "--report", report)
    assert code == 0, err
    assert "warning: m.onnx is stale:" in out
    engine = json.loads(report.read_text())["engine"]
    recorded = json.loads(onnx.with_name("m.onnx.json").read_text())["source"]
    assert engine["source"] == {"checkpoint": recorded["checkpoint"], "fingerprint": recorded["fingerprint"]}
    assert engine["source_fingerprint"] == recorded["fingerprint"] and "is stale" in engine["stale"]

    code, out, err = main(monkeypatch, capsys, "eval", "--task", "sst2", "--engine", onnx, "--data-dir", glue_dir,
                          "--limit", "8", "--reference", other, "--gate", "none")
    assert f"warning: m.onnx was not made from the reference {other}" in out, out


def test_bench_warns_when_an_engine_was_not_made_from_the_model(stale, monkeypatch, capsys):
    onnx, ckpt, other = stale
    from debx.bench import BenchConfig, provenance_notes

    notes = provenance_notes(BenchConfig(models=[other], engines=[onnx]))
    assert len(notes) == 1 and notes[0].startswith(f"warning: m.onnx is stale for {other}")
    notes = provenance_notes(BenchConfig(engines=[onnx]))
    assert len(notes) == 1 and notes[0].startswith(f"warning: m.onnx is stale: {ckpt} has changed")
    code, out, err = main(monkeypatch, capsys, "bench", "--engine", onnx, "--seq", "8", "--iters", "1",
                          "--warmup", "0", "--block", "1")
    assert code == 0, err
    assert "warning: m.onnx is stale:" in out


def test_build_warns_before_anything_else(stale, tmp_path, monkeypatch):
    from debx import engine
    from debx.errors import MissingDependencyError

    def no_tensorrt():
        raise MissingDependencyError("TensorRT Python package not found")

    monkeypatch.setattr(engine, "import_tensorrt", no_tensorrt)
    onnx, _, _ = stale
    logged = []
    with pytest.raises(MissingDependencyError):
        engine.build_engine(engine.BuildConfig(onnx=onnx, output=tmp_path / "m.plan"), log=logged.append)
    assert len(logged) == 1 and logged[0].startswith("warning: m.onnx is stale:")
