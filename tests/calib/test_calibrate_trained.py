"""`debx calibrate` on checkpoints that look like users' (tests/conftest.py: trained_like_checkpoints), issue 11:

* `--precision fp16` writes a file `debx validate` accepts (it was rejected: value_info of FP32 LayerNorm weights
  retyped to float16);
* a model whose activations overflow FP16 either gets a working FP16 file or one clear line (exit 2), never a
  segmentation fault inside ONNX Runtime's session creation, and never a leftover `.tmp-*` folder;
* `--int8-attention` is refused where it would quantize nothing (attention inside custom nodes, or an FP16 output)
  instead of reporting success.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from debx.calib.calibrate import CalibrateConfig, calibrate
from debx.calib.qdq import QDQPolicy
from debx.errors import ConfigError
from debx.exporters.export import ExportConfig, export_onnx
from debx.exporters.validate import validate_onnx

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "debx", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def trained_exports(tmp_path_factory, trained_like_checkpoints) -> dict[str, Path]:
    """FP32 exports of the trained-like v3 checkpoint: {"onnx": ..., "debx": ...} (validation skipped: the
    exporter tests validate these modes)."""
    root = tmp_path_factory.mktemp("trained-fp32")
    return {mode: export_onnx(ExportConfig(trained_like_checkpoints["v3"], root / f"v3.{mode}.onnx", attention=mode,
                                           validate=False)).output
            for mode in ("onnx", "debx")}


@pytest.fixture(scope="module")
def overflowing(tmp_path_factory, tiny_tokenizers):
    """(checkpoint, FP32 export) of a trained-like v3 whose feed-forward weights are 1000x larger: the FFN
    activations reach ~1e6, far beyond FP16's 65504, in both layers."""
    from debx.variants import build_checkpoint, trained_like

    def big_ffn(model):
        trained_like(model)
        for name, p in model.named_parameters():
            if name.endswith(("intermediate.dense.weight", "output.dense.weight")) and "attention" not in name:
                p.data.mul_(1000.0)

    root = tmp_path_factory.mktemp("overflow")
    ckpt = build_checkpoint("v3", root / "ckpt", tokenizer_dir=tiny_tokenizers["spm"], seed=1, transform=big_ffn)
    onnx_path = export_onnx(ExportConfig(ckpt, root / "export" / "v3.onnx", validate=False)).output
    return ckpt, onnx_path


@pytest.mark.parametrize("mode", ["onnx", "debx"])
def test_calibrated_fp16_file_validates(trained_exports, trained_like_checkpoints, glue_dir, tmp_path, mode):
    out = tmp_path / f"v3.{mode}.fp16.onnx"
    calibrate(CalibrateConfig(model=trained_exports[mode], output=out, task="sst2", data_dir=glue_dir,
                              precision="fp16", num_samples=16, threads=1))
    graph = onnx.load(str(out))
    inits = {t.name for t in graph.graph.initializer}
    assert not [vi.name for vi in graph.graph.value_info if vi.name in inits]
    report = validate_onnx(out, trained_like_checkpoints["v3"], data_dir=glue_dir)  # raises when it fails
    assert report.ok and report.precision == "fp16" and report.max_abs_diff <= 2e-2


@pytest.mark.slow  # ~25 s: two CLI processes; test_calibrated_fp16_file_validates checks the same in-process
def test_cli_validate_accepts_calibrated_fp16(trained_exports, trained_like_checkpoints, glue_dir, tmp_path):
    out = tmp_path / "v3.fp16.onnx"
    r = run_cli("calibrate", trained_exports["onnx"], "--task", "sst2", "--data-dir", glue_dir, "-o", out,
                "--precision", "fp16", "--num-samples", "16")
    assert r.returncode == 0, r.stderr
    r = run_cli("validate", out, "--model", trained_like_checkpoints["v3"], "--data-dir", glue_dir)
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout


def test_fp16_of_an_overflowing_model_is_a_file_or_one_line(overflowing, glue_dir, tmp_path):
    """Before: exit 139 (SIGSEGV in ONNX Runtime's session creation) and a .tmp-* folder left behind."""
    ckpt, fp32 = overflowing
    out = tmp_path / "big.fp16.onnx"
    r = run_cli("calibrate", fp32, "--task", "sst2", "--data-dir", glue_dir, "-o", out, "--precision", "fp16",
                "--num-samples", "32")
    assert r.returncode in (0, 2), f"exit {r.returncode}: {r.stderr[-300:]}"
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or p.name.startswith(".debx-")]
    assert not [p.name for p in fp32.parent.iterdir() if ".tmp-" in p.name]
    if r.returncode == 2:
        assert r.stderr.startswith("debx: error: ") and r.stderr.count("\n") == 1 and "FP16" in r.stderr
        assert not list(tmp_path.iterdir())  # nothing written
    else:  # the overflowing ops were kept in FP32: the file must load in plain ONNX Runtime and stay finite
        import onnxruntime as ort

        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        ids = np.array([[1, 100, 200, 300, 2]], dtype=np.int64)
        y = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
        assert np.isfinite(y).all()


def test_session_crash_probe_passes_a_sound_model(trained_exports):
    from debx.calib.fp16 import session_crash

    assert session_crash(onnx.load(str(trained_exports["onnx"]))) is None


@pytest.mark.parametrize("kinds", ["all", ("scores",)])
def test_int8_attention_is_refused_on_a_custom_attention_graph(trained_exports, glue_dir, tmp_path, kinds):
    out = tmp_path / "q.onnx"
    with pytest.raises(ConfigError, match="custom DebxDisentangledAttention node.*stay float"):
        calibrate(CalibrateConfig(model=trained_exports["debx"], output=out, task="sst2", data_dir=glue_dir,
                                  policy=QDQPolicy(attention=kinds), num_samples=8))
    assert not list(tmp_path.iterdir())


def test_int8_attention_is_refused_for_fp16(trained_exports, glue_dir, tmp_path):
    with pytest.raises(ConfigError, match="applies to --precision int8"):
        calibrate(CalibrateConfig(model=trained_exports["onnx"], output=tmp_path / "h.onnx", task="sst2",
                                  data_dir=glue_dir, precision="fp16", policy=QDQPolicy(attention="all")))
    assert not list(tmp_path.iterdir())


def test_cli_int8_attention_on_debx_graph_is_one_line(trained_exports, glue_dir, tmp_path):
    out = tmp_path / "q.onnx"
    r = run_cli("calibrate", trained_exports["debx"], "--task", "sst2", "--data-dir", glue_dir, "-o", out,
                "--int8-attention", "all")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("debx: error: --int8-attention scores,position,context: ")
    assert not list(tmp_path.iterdir())


def test_int8_attention_still_quantizes_standard_attention(trained_exports, glue_dir, tmp_path):
    res = calibrate(CalibrateConfig(model=trained_exports["onnx"], output=tmp_path / "q.onnx", task="sst2",
                                    data_dir=glue_dir, method="minmax", num_samples=8, threads=1,
                                    policy=QDQPolicy(attention="all")))
    placement = res.metadata["quantization"]["placement"]
    assert {placement["kinds"][n] for n in placement["quantized"]} >= {"linear", "scores", "position", "context"}
