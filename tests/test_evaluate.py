"""debx eval: the report, label mapping, PyTorch vs ONNX Runtime agreement on a trained model, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from debx.evaluate import EvalConfig, evaluate, label_permutation
from debx.tasks import get_task

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "glue"


@pytest.fixture(scope="module")
def trained_rte(tmp_path_factory):
    """A tiny DeBERTa-v3 trained by `debx train` for a few steps on RTE pairs (the recipe, not a random model)."""
    from debx.train import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "rte"
    train(TrainConfig(task="rte", output_dir=out, data_dir=GLUE, preset="tiny", vocab_size=800, epochs=1,
                      batch_size=16, max_train_samples=128, max_eval_samples=32, max_seq_len=96, progress=False,
                      threads=1))
    return out


def _debx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "debx", *args], capture_output=True, text=True)


def test_eval_cli_writes_the_report(trained_rte, tmp_path):
    report = tmp_path / "r.json"
    p = _debx("eval", "--task", "rte", "--model", str(trained_rte), "--data-dir", str(GLUE), "--limit", "40",
              "--report", str(report))
    assert p.returncode == 0, p.stderr
    r = json.loads(report.read_text())
    assert r["task"] == "rte" and r["split"] == "dev" and r["n_examples"] == 40
    assert set(r["metrics"]) == {"accuracy"} and 0 <= r["metrics"]["accuracy"] <= 100
    assert len(r["engine"]["fingerprint"]) == 16 and r["runner"]["runner"] == "torch"
    assert {"debx", "torch", "transformers", "python"} <= set(r["versions"])
    assert len(r["predictions"]) == len(r["guids"]) == 40 and r["guids"][0] == "dev.tsv:2"


@pytest.mark.parametrize("target", ["engine", "sidecar", "checkpoint config"])
def test_eval_refuses_a_report_that_is_an_input(trained_rte, tmp_path, target):
    """--report pointing at the engine (or its sidecar, or a file of the checkpoint) is one line, exit 2, and the
    file is untouched."""
    engine = tmp_path / "m.onnx"
    engine.write_bytes(b"not really a graph, never read")
    (tmp_path / "m.onnx.json").write_text("{}")
    if target == "checkpoint config":
        source, victim = ["--model", str(trained_rte)], trained_rte / "config.json"
    else:
        source, victim = ["--engine", str(engine)], engine if target == "engine" else tmp_path / "m.onnx.json"
    before = victim.read_bytes()
    p = _debx("eval", "--task", "rte", *source, "--data-dir", str(GLUE), "--limit", "8", "--report", str(victim))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("debx: error: --report") and "input" in lines[0], p.stderr
    assert victim.read_bytes() == before


def test_onnx_runtime_gives_identical_predictions(trained_rte, tmp_path):
    from debx.exporters.export import ExportConfig, export_onnx

    onnx_path = tmp_path / "m.onnx"
    export_onnx(ExportConfig(checkpoint=trained_rte, output=onnx_path))
    kw = dict(task="rte", data_dir=GLUE, limit=64, progress=False, threads=1)
    torch_res = evaluate(EvalConfig(engine=trained_rte, **kw))
    onnx_res = evaluate(EvalConfig(engine=onnx_path, **kw))
    assert np.array_equal(torch_res.predictions, onnx_res.predictions)
    assert torch_res.metrics == onnx_res.metrics
    assert onnx_res.report["runner"]["runner"] == "onnxruntime"


def test_label_permutation_maps_checkpoint_label_order():
    mnli = get_task("mnli")  # task order: contradiction, entailment, neutral
    hub_order = {0: "contradiction", 1: "neutral", 2: "entailment"}  # microsoft/deberta-*-mnli order
    perm = label_permutation(mnli, hub_order)
    assert perm.tolist() == [0, 2, 1]
    logits = np.array([[0.0, 5.0, 1.0]])  # the model says "neutral" (its column 1)
    assert mnli.labels[int(np.argmax(logits[:, np.argsort(perm)]))] == "neutral"
    assert label_permutation(mnli, {0: "contradiction", 1: "entailment", 2: "neutral"}) is None
    assert label_permutation(get_task("sst2"), {0: "LABEL_0", 1: "LABEL_1"}) is None


@pytest.mark.parametrize("args, needle", [
    (["--engine", "/nonexistent/model.onnx"], "no such file"),
    (["--model", "/nonexistent", "--engine", "/x.onnx"], "exactly one of"),
    (["--model", "{ckpt}", "--split", "test2"], "test2"),
])
def test_eval_bad_input_is_one_line(trained_rte, args, needle):
    args = [a.replace("{ckpt}", str(trained_rte)) for a in args]
    p = _debx("eval", "--task", "rte", "--data-dir", str(GLUE), *args)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("debx: error:") and needle in p.stderr and p.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------------------------------
# Streaming: the split is read, tokenized and scored one chunk at a time (memory flat whatever the split's size)
# ---------------------------------------------------------------------------------------------------------------------


def _large_sst2(root: Path, rows: int) -> Path:
    """A GLUE-layout SST-2 folder whose dev split has `rows` rows (synthetic sentences of varied length)."""
    words = "the film is a quiet , funny and moving story about grief but too long".split()
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    with open(folder / "dev.tsv", "w") as f:
        f.write("sentence\tlabel\n")
        for i in range(rows):
            f.write(" ".join(words[(i * 7 + k) % len(words)] for k in range(3 + i % 11)) + f"\t{i % 2}\n")
    (folder / "train.tsv").write_text("sentence\tlabel\nok\t1\n")
    return root


def test_eval_streams_the_split_in_chunks(tiny_checkpoints, tmp_path, monkeypatch):
    """30 chunks of 400 rows: no more than one chunk is ever read ahead and tokenized, the first batch exists before
    the file is read further, and the result equals scoring the split in one piece."""
    import debx.evaluate as ev
    from debx import tasks

    data = _large_sst2(tmp_path, 12_000)
    sizes = []
    real_encode = ev.encode
    monkeypatch.setattr(ev, "encode", lambda tok, a, *rest: sizes.append(len(a)) or real_encode(tok, a, *rest))
    cfg = EvalConfig(task="sst2", engine=tiny_checkpoints["v3"], data_dir=data, batch_size=200, chunk_rows=400,
                     progress=False, threads=1)
    res = evaluate(cfg)
    assert res.report["n_examples"] == 12_000 and res.report["guids"][:2] == ["dev.tsv:2", "dev.tsv:3"]
    assert max(sizes) == 400 and len(sizes) == 30  # never more than one chunk tokenized at a time

    read = []
    real_iter = tasks.iter_split

    def counting(*a, **k):
        for e in real_iter(*a, **k):
            read.append(e.guid)
            yield e

    from debx.tokenizer import load_tokenizer

    stream = ev.BatchStream(ev._labeled(counting(get_task("sst2"), data, "dev"), set(), get_task("sst2"), "dev"),
                            load_tokenizer(tiny_checkpoints["v3"]), 128, batch_size=200, chunk_rows=400)
    batches = iter(stream)
    examples, positions, feeds = next(batches)
    assert len(read) == 400 and len(examples) == 200 and feeds["input_ids"].shape[0] == 200  # lazily: one chunk
    assert max(positions) < 400

    sizes.clear()
    whole = evaluate(EvalConfig(task="sst2", engine=tiny_checkpoints["v3"], data_dir=data, batch_size=200,
                                chunk_rows=20_000, progress=False, threads=1))
    assert sizes == [12_000]
    assert whole.report["guids"] == res.report["guids"]
    assert (whole.predictions == res.predictions).all() and whole.metrics == res.metrics
