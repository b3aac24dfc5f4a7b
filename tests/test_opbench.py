"""`debx bench --op attention`: configuration checks and the clear refusals on a machine without a GPU. The timing
itself runs on a GPU (README, "On NVIDIA GPUs"; marked gpu below)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from debx.errors import ConfigError, MissingDependencyError
from debx.opbench import OpBenchConfig, op_table_rows, run_op_bench


def _debx(*args):
    return subprocess.run([sys.executable, "-m", "debx", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kw, msg", [
    (dict(op="softmax"), "only op"),
    (dict(dtype="fp8"), "--dtype"),
    (dict(compare=("debx", "cudnn")), "--compare cudnn"),
    (dict(heads=0), "heads"),
    (dict(seqs=(0,)), "positive"),
])
def test_bad_configs_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        OpBenchConfig(**kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_cpu_only_machine_gets_one_clear_line():
    with pytest.raises(MissingDependencyError, match="needs --device cuda"):
        run_op_bench(OpBenchConfig(device="cpu"))
    p = _debx("bench", "--op", "attention", "--device", "cuda", "--seq", "64")
    assert p.returncode == 2 and p.stderr.strip().startswith("debx: error:") and "Traceback" not in p.stderr
    p = _debx("bench", "--op", "attention", "--device", "cpu")
    assert p.returncode == 2 and "needs --device cuda" in p.stderr
    p = _debx("bench", "--op", "attention", "--model", "x")
    assert p.returncode == 2 and "leave out --model" in p.stderr


def test_table_rows_show_every_entry_and_the_ratio():
    report = {"entries": ["debx", "sdpa-bias"], "rows": [
        {"batch": 4, "seq": 2048, "ms": {"debx": 1.0, "sdpa-bias": 5.8}, "debx_max_abs_vs_fp32": 1e-3}]}
    header, rows = op_table_rows(report)
    assert header[:3] == ["shape", "debx", "sdpa-bias"]
    assert rows == [["4x2048", "1.000", "5.800", "5.8x", "1.0e-03"]]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_op_bench_runs_on_a_gpu():
    report = run_op_bench(OpBenchConfig(batches=(2,), seqs=(130,), compare=("debx", "eager"), iters=5))
    row = report["rows"][0]
    assert row["ms"]["debx"] > 0 and row["ms"]["eager"] > 0
    assert row["debx_max_abs_vs_fp32"] < 2e-2
