"""User paths end to end (issue 11, "Tests that look like users"): the real CLI (`python -m debx ...` in a
subprocess, as a user types it) on checkpoints written by transformers' `save_pretrained` with trained-like weights
(tests/conftest.py: trained_like_checkpoints), checked against **transformers'** own logits as well as debx's model.

    train      fine-tune v3 a few steps with --stop-after (and --max-seq-len past max_position_embeddings), --resume;
               a preset with a vocabulary under 1000, then `debx bench` of it
    export     --attention onnx | fast | debx, --fp16 (v3); --attention fast on v2 (token types, nGiE conv); v1 at a
               length past its absolute position table is one line, exit 2
    calibrate  int8 and fp16
    eval       --gate paper against the PyTorch reference (FP32 and INT8 engines), --report
    bench      tiny --iters, at 700 tokens, --json
    validate   the FP16 export and the calibrated FP16 file
and lengths 513, 700 and 1500 (4x to 12x max_position_embeddings = 128) through the exported graphs, which the
export itself validated up to 1500 tokens (--max-seq-len).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

LENGTHS = (513, 700, 1500)
FP32_ATOL, FP16_ATOL = 1e-4, 2e-2


def debx(*args, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m debx ARGS` in `cwd` (one thread each)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "debx", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)


def debx_two_at_a_time(commands: dict[str, list], cwd: Path) -> dict[str, subprocess.CompletedProcess]:
    """Independent commands, two at a time (one per core; most of a command's time is its imports)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(debx, *args, cwd=cwd) for name, args in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"{' '.join(p.args[2:])}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    return p


def one_line(p: subprocess.CompletedProcess, message: str) -> None:
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("debx: error:") and message in lines[0], \
        p.stderr[-3000:]


def long_feeds(n: int, vocab: int, with_types: bool) -> dict[str, np.ndarray]:
    """Two rows of n tokens, the second padded to 2n/3: a padded long batch."""
    rng = np.random.default_rng(n)
    ids = rng.integers(5, min(vocab, 30000), (2, n)).astype(np.int64)
    ids[:, 0] = 1
    mask = np.ones_like(ids)
    mask[1, 2 * n // 3:] = 0
    ids[1, 2 * n // 3:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if with_types:
        feeds["token_type_ids"] = (np.arange(n)[None] >= n // 2).astype(np.int64).repeat(2, 0)
    return feeds


@functools.lru_cache(maxsize=None)
def reference_models(checkpoint: Path):
    """(transformers' AutoModelForSequenceClassification, debx's PyTorch model) of a checkpoint folder."""
    import transformers

    from debx.checkpoint import load_model

    return (transformers.AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval(),
            load_model(checkpoint)[0].eval())


@functools.lru_cache(maxsize=None)
def session(path: Path):
    """The ONNX Runtime runner debx uses (it registers the debx op library for --attention debx graphs)."""
    from debx.runtimes import runner_for

    return runner_for(path, threads=1).activate()


def reference_logits(checkpoint: Path, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(transformers' logits, debx's PyTorch model's logits) on the same feeds."""
    import torch

    hf, ours = reference_models(checkpoint)
    t = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        return hf(**t).logits.numpy(), ours(**t).numpy()


@pytest.fixture(scope="module")
def work(tmp_path_factory, trained_like_checkpoints) -> Path:
    """A user's folder holding copies of the trained-like v1/v2/v3 checkpoints (as folders named v1, v2, v3)."""
    import shutil

    root = tmp_path_factory.mktemp("user")
    for v in ("v1", "v2", "v3"):
        shutil.copytree(trained_like_checkpoints[v], root / v)
    return root


@pytest.fixture(scope="module")
def exports(work, glue_dir) -> dict[str, Path]:
    """The exports a user makes, with the CLI (each validated by the export itself, up to --max-seq-len tokens)."""
    commands = {
        "v3.onnx": ["v3", "--attention", "onnx"],
        "v3.fast": ["v3", "--attention", "fast", "--max-seq-len", "1500"],
        "v3.debx": ["v3", "--attention", "debx"],
        "v3.fp16": ["v3", "--fp16"],
        "v2.fast": ["v2", "--attention", "fast", "--max-seq-len", "700"],
    }
    done = debx_two_at_a_time({name: ["export", *args, "-o", f"{name}.onnx", "--data-dir", glue_dir]
                               for name, args in commands.items()}, work)
    out = {}
    for name, p in done.items():
        ok(p)
        assert p.stdout.splitlines()[-1].startswith(f"wrote {work / name}.onnx"), p.stdout[-500:]
        side = json.loads((work / f"{name}.onnx.json").read_text())
        assert side["precision"] == ("fp16" if "fp16" in name else "fp32")
        out[name] = work / f"{name}.onnx"
    return out


@pytest.mark.slow
def test_export_modes_match_transformers_and_debx(exports, work, hf_glue_logits, glue_dir):
    """Every export vs transformers' logits on padded GLUE rows: FP32 <= 1e-4, FP16 <= 2e-2."""
    worst = {}
    for name, path in exports.items():
        runner = session(path)
        ckpt = work / name.split(".")[0]
        for feeds, ref in hf_glue_logits(ckpt, glue_dir, "token_type_ids" in runner.input_names):
            got = next(iter(runner.infer(feeds).values()))
            assert got.shape == ref.shape
            worst[name] = max(worst.get(name, 0.0), float(np.abs(got - ref).max()))
    print("max |diff| vs transformers on GLUE rows:", {k: f"{v:.2e}" for k, v in worst.items()})
    for name, diff in worst.items():
        assert diff <= (FP16_ATOL if "fp16" in name else FP32_ATOL), (name, diff)


@pytest.mark.slow
@pytest.mark.parametrize("n", LENGTHS)
def test_long_sequences_match_transformers(exports, work, n):
    """513, 700 and 1500 tokens on models with 128 positions: the debx PyTorch model and the onnx/fast/debx graphs
    against transformers (FP32 <= 1e-4); v2 (linear positions, token types) at 513 and 700."""
    for name in ("v3.onnx", "v3.fast", "v3.debx", "v2.fast"):
        if name.startswith("v2") and n > 700:
            continue
        runner = session(exports[name])
        ckpt = work / name.split(".")[0]
        feeds = long_feeds(n, 128100, "token_type_ids" in runner.input_names)
        hf, ours = reference_logits(ckpt, feeds)
        got = next(iter(runner.infer(feeds).values()))
        diffs = float(np.abs(ours - hf).max()), float(np.abs(got - hf).max()), float(np.abs(got - ours).max())
        print(f"N={n} {name}: max |diff| debx PyTorch vs transformers {diffs[0]:.2e}, graph vs transformers "
              f"{diffs[1]:.2e}, graph vs debx PyTorch {diffs[2]:.2e}")
        assert max(diffs) <= FP32_ATOL, (name, n, diffs)


def test_v1_past_its_absolute_positions_is_one_line(work, glue_dir):
    """v1 with absolute position embeddings stops at max_position_embeddings (transformers fails there too)."""
    one_line(debx("export", "v1", "-o", "v1.onnx", "--max-seq-len", "700", "--data-dir", glue_dir, cwd=work),
             "exceeds the model's limit of 128 tokens")
    assert not (work / "v1.onnx").exists()


@pytest.mark.slow
def test_calibrate_validate_eval_bench(exports, work, glue_dir):
    """calibrate int8 and fp16, validate the calibrated FP16 file (the FP16 export validated itself), eval --gate paper against the PyTorch reference, bench."""
    data = ["--data-dir", glue_dir]
    cal = debx_two_at_a_time({
        "int8": ["calibrate", "v3.fast.onnx", "--task", "sst2", "-o", "v3.int8.onnx", "--num-samples", "32", *data],
        "fp16": ["calibrate", "v3.fast.onnx", "--task", "sst2", "-o", "v3.cal16.onnx", "--precision", "fp16",
                 "--num-samples", "16", *data]}, work)
    assert "int8:" in ok(cal["int8"]).stdout and (work / "v3.int8.onnx.json").is_file()
    assert ok(cal["fp16"]).stdout.splitlines()[0].startswith("calibration data:"), cal["fp16"].stdout[:500]

    checks = debx_two_at_a_time({
        "validate": ["validate", "v3.cal16.onnx", "--model", "v3", *data],
        # the PyTorch FP32 model is the reference; a length past max_position_embeddings is accepted (v3)
        "eval": ["eval", "--task", "sst2", "--engine", "v3.int8.onnx", "--reference", "v3", "--gate", "paper",
                 "--limit", "96", "--max-seq-len", "700", "--report", "int8.json", *data]}, work)
    assert "PASS: max abs diff" in ok(checks["validate"]).stdout, checks["validate"].stdout[-1500:]
    p = checks["eval"]
    # the verdict is the model's business (trained-like random weights), but exit code, table and report agree
    assert p.returncode in (0, 1) and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert ("**PASS**" in p.stdout) == (p.returncode == 0) and "| sst2 | accuracy |" in p.stdout, p.stdout[-1500:]
    assert {"int8.json", "int8.md"} <= {f.name for f in work.iterdir()}

    p = ok(debx("bench", "--model", "v3", "--engine", "v3.debx.onnx", "--engine", "v3.int8.onnx", "--batch", "1",
                "--seq", "700", "--iters", "2", "--warmup", "1", "--block", "1", "--json", "bench.json", cwd=work))
    rows = {r["engine"]: r for r in json.loads((work / "bench.json").read_text())["results"]}
    assert rows["v3.debx.onnx"]["seq"] == 700 and rows["v3.debx.onnx"]["max_abs_diff"] <= FP32_ATOL
    assert rows["v3.int8.onnx"]["max_abs_diff"] is not None


@pytest.mark.slow
def test_train_stop_resume_and_a_small_vocabulary(work, glue_dir):
    """Fine-tune the trained-like v3 with --stop-after at --max-seq-len 700 (relative positions: no limit), resume
    to the end; train a preset with a 300-piece vocabulary and bench it (ids drawn below its vocabulary)."""
    import transformers

    data = ["--data-dir", glue_dir, "--threads", "1"]
    ft = ["train", "--task", "sst2", "--model", "v3", "-o", "ft", "--epochs", "1", "--batch-size", "8",
          "--max-train-samples", "32", "--max-seq-len", "700", *data]
    small = ["train", "--task", "sst2", "--preset", "tiny", "-o", "small", "--vocab-size", "300", "--epochs", "1",
             "--batch-size", "32", "--max-train-samples", "64", "--max-seq-len", "64", *data]
    first = debx_two_at_a_time({"ft": [*ft, "--stop-after", "2"], "small": small}, work)
    ok(first["ft"])
    assert (work / "ft" / "last").is_dir() and not (work / "ft" / "metrics.json").exists()
    ok(first["small"])
    vocab = json.loads((work / "small" / "config.json").read_text())["vocab_size"]
    assert vocab < 1000

    second = debx_two_at_a_time({"resume": [*ft, "--resume"],
                                 "bench": ["bench", "--model", "small", "--batch", "2", "--seq", "32", "--iters", "1",
                                           "--warmup", "0", "--json", "small.json"]}, work)
    p = ok(second["resume"])
    assert p.stdout.splitlines()[-1].startswith("checkpoint: ft"), p.stdout[-500:]
    assert json.loads((work / "ft" / "metrics.json").read_text())["steps"] == 4
    transformers.AutoModelForSequenceClassification.from_pretrained(str(work / "ft"))
    ok(second["bench"])
    assert json.loads((work / "small.json").read_text())["input_ids_below"] == vocab
