"""debx train: the recipe end to end on tiny data, determinism, resume, DDP equivalence, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from debx.errors import ConfigError, DataError
from debx.train import TrainConfig, train

GLUE = Path(__file__).resolve().parents[1].parent / "shared" / "glue"
SMALL = dict(task="sst2", data_dir=GLUE, preset="tiny", vocab_size=600, epochs=1, batch_size=16,
             max_train_samples=96, max_eval_samples=64, max_seq_len=64, progress=False, threads=1, seed=3)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_train_writes_a_checkpoint_transformers_loads(tmp_path):
    out = tmp_path / "run"
    result = train(TrainConfig(output_dir=out, **SMALL))
    for name in ("config.json", "model.safetensors", "tokenizer.json", "spm.model", "train_log.jsonl", "metrics.json"):
        assert (out / name).is_file(), name
    assert result["steps"] == 6 and 0 <= result["best"] <= 100
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("dev" in rec for rec in log) and any("loss" in rec for rec in log)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["DebertaV2ForSequenceClassification"] and cfg["id2label"] == {"0": "0", "1": "1"}

    import transformers

    from debx.checkpoint import load_model
    from debx.tokenizer import encode, load_tokenizer

    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    ours, _ = load_model(out)
    tok = load_tokenizer(out)
    batch = encode(tok, ["a gorgeous , witty , seductive movie .", "bad"], None, 64).batch(slice(0, 2))
    feeds = {k: torch.from_numpy(v) for k, v in batch.items() if k != "token_type_ids"}
    with torch.no_grad():
        assert torch.allclose(hf(**feeds).logits, ours(**feeds), atol=1e-5)


def test_same_seed_same_model_and_resume_matches_uninterrupted(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train(TrainConfig(output_dir=a, **SMALL))
    train(TrainConfig(output_dir=b, **SMALL))
    wa, wb = _weights(a / "last" / "ckpt"), _weights(b / "last" / "ckpt")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    stopped = train(TrainConfig(output_dir=c, stop_after=2, **SMALL))
    assert stopped["stopped_at"] == 2 and not (c / "metrics.json").exists()
    train(TrainConfig(output_dir=c, resume=True, **SMALL))
    wc = _weights(c / "last" / "ckpt")
    assert max((wa[k] - wc[k]).abs().max().item() for k in wa) == 0.0


class _Payload:
    """Unpickling this creates a marker file: what a planted trainer_state.pt could do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_resume_never_unpickles(tmp_path):
    """A pickle planted in last/ is never loaded: resume reads safetensors + JSON only (and still works); a run that
    has only the legacy pickle is refused with one ConfigError, its payload not run."""
    out, marker = tmp_path / "run", tmp_path / "PAYLOAD_RAN"
    train(TrainConfig(output_dir=out, stop_after=2, **SMALL))
    last = out / "last"
    assert {"trainer_state.json", "trainer_state.safetensors"} <= {p.name for p in last.iterdir()}
    torch.save({"state": _Payload(marker)}, last / "trainer_state.pt")
    with pytest.raises(Exception):  # the payload works when unpickled the old way
        torch.load(last / "trainer_state.pt", weights_only=True)
    res = train(TrainConfig(output_dir=out, resume=True, **SMALL))
    assert res["steps"] == 6 and (out / "metrics.json").is_file()
    assert not marker.exists()

    old = tmp_path / "old"
    train(TrainConfig(output_dir=old, stop_after=1, **SMALL))
    for name in ("trainer_state.json", "trainer_state.safetensors"):
        (old / "last" / name).unlink()
    torch.save({"state": _Payload(marker)}, old / "last" / "trainer_state.pt")
    with pytest.raises(ConfigError, match="pickle"):
        train(TrainConfig(output_dir=old, resume=True, **SMALL))
    assert not marker.exists()
    torch.load(old / "last" / "trainer_state.pt", weights_only=False)
    assert marker.exists()  # the planted file is a live payload: the checks above mean something


def test_output_modes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        train(TrainConfig(output_dir=tmp_path / "run", stop_after=1, **SMALL))
    finally:
        os.umask(old)
    run = tmp_path / "run"
    for f in ("model.safetensors", "config.json", "last/trainer_state.safetensors", "last/trainer_state.json",
              "last/ckpt/model.safetensors"):
        assert (run / f).stat().st_mode & 0o777 == 0o644, f
    for d in ("last", "last/ckpt"):
        assert (run / d).stat().st_mode & 0o777 == 0o755, d


def test_swapping_in_a_new_best_checkpoint_is_all_or_nothing(tmp_path, monkeypatch):
    from debx.train import _swap_best

    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl"):
        (out / name).write_text(f"old {name}")
    (out / "best.tmp").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (out / "best.tmp" / name).write_text(f"new {name}")
    real, calls = os.replace, []

    def replace(a, b):
        calls.append(b)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _swap_best(out)
    monkeypatch.setattr(os, "replace", real)
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file()} == {
        n: f"old {n}" for n in ("config.json", "model.safetensors", "tokenizer.json", "train_log.jsonl")}
    _swap_best(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json",
                                                     "train_log.jsonl"]
    assert (out / "config.json").read_text() == "new config.json" and (out / "train_log.jsonl").read_text() == \
        "old train_log.jsonl"


def test_fine_tune_a_checkpoint_with_a_new_head(tmp_path, tiny_checkpoints):
    out = tmp_path / "ft"
    cfg = dict(SMALL, preset=None, task="rte", max_train_samples=32, max_eval_samples=16, batch_size=8)
    res = train(TrainConfig(output_dir=out, model=tiny_checkpoints["v3"], **cfg))
    assert res["task"] == "rte" and (out / "model.safetensors").is_file()


@pytest.mark.parametrize("bad, err", [
    (dict(data_dir=Path("/nonexistent/glue")), DataError),
    (dict(task="no-such-task"), DataError),
    (dict(preset="gigantic"), ConfigError),
    (dict(model=Path("/nonexistent/ckpt"), preset=None), Exception),
])
def test_bad_input_leaves_no_output(tmp_path, bad, err):
    out = tmp_path / "never"
    with pytest.raises(err):
        train(TrainConfig(output_dir=out, **{**SMALL, **bad}))
    assert not out.exists()


def test_max_seq_len_stops_only_at_absolute_positions(tmp_path, tiny_checkpoints):
    """--max-seq-len over max_position_embeddings (128 in the fixtures and the tiny preset): refused in one line for
    a model with absolute position embeddings (v1), accepted where relative positions take any length (v3, and a
    preset trained from scratch), as `debx eval` and `debx bench` decide (issue 11)."""
    cfg = dict(SMALL, max_seq_len=700, max_train_samples=16, max_eval_samples=8, batch_size=8)
    with pytest.raises(ConfigError, match="--max-seq-len 700 exceeds the model's limit of 128 tokens"):
        train(TrainConfig(output_dir=tmp_path / "v1", model=tiny_checkpoints["v1"], **dict(cfg, preset=None)))
    assert not (tmp_path / "v1").exists()
    for name, extra in (("v3", dict(model=tiny_checkpoints["v3"], preset=None)), ("preset", {})):
        res = train(TrainConfig(output_dir=tmp_path / name, stop_after=1, **{**cfg, **extra}))
        assert res["stopped_at"] == 1 and (tmp_path / name / "last").is_dir(), name


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    out = tmp_path / "x"
    p = subprocess.run([sys.executable, "-m", "debx", "train", "--task", "sst2", "--preset", "tiny", "-o", str(out),
                        "--data-dir", str(tmp_path / "missing")], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and p.stderr.startswith("debx: error:")
    assert "Traceback" not in p.stderr and not out.exists()


@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun with 2 CPU processes (gloo) and the same global batch gives the same model as 1 process."""
    args = ["train", "--task", "sst2", "--preset", "tiny", "--data-dir", str(GLUE), "--epochs", "1",
            "--batch-size", "16", "--max-train-samples", "64", "--max-seq-len", "64", "--vocab-size", "600",
            "--dropout", "0", "--threads", "1", "--seed", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, "-m", "debx", *args, "-o", str(one)], check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                    "-m", "debx", *args, "-o", str(two)], check=True, env=env, capture_output=True)
    w1, w2 = _weights(one / "last" / "ckpt"), _weights(two / "last" / "ckpt")
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert diff < 1e-4, diff
    assert json.loads((two / "metrics.json").read_text())["world_size"] == 2
