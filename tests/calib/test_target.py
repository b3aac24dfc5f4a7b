"""`debx calibrate --target ort|trt`: trt (default) writes symmetric int8 activations; ort writes uint8 activations
and an ONNX Runtime CPU-optimised file, recorded in the sidecar; an explicit --activations wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from debx.calib.calibrate import CalibrateConfig, calibrate
from debx.errors import ConfigError


def _cfg(exports, glue_dir, out, **kw):
    return CalibrateConfig(model=exports["v3"], output=out, task="sst2", data_dir=glue_dir, method="minmax",
                           num_samples=16, threads=1, **kw)


def _activation_zero_point_types(model) -> set[int]:
    """Element types of the zero points of every activation QuantizeLinear (weights are constant-folded or DQ-only)."""
    inits = {t.name: t for t in model.graph.initializer}
    return {inits[n.input[2]].data_type for n in model.graph.node
            if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits}


def _feeds(n: int = 9):
    ids = np.arange(1, 2 * n + 1, dtype=np.int64).reshape(2, n) % 50 + 5
    mask = np.ones_like(ids)
    mask[1, n // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_target_ort_writes_uint8_ort_optimised_model(exports, glue_dir, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "v3.ort.int8.onnx"
    res = calibrate(_cfg(exports, glue_dir, out, target="ort"))
    side = json.loads(res.sidecar.read_text())
    assert side["target"] == "ort" and side["precision"] == "int8"
    assert side["quantization"]["policy"]["activation_type"] == "uint8"
    assert side["ort_optimized"]["level"] == "ORT_ENABLE_EXTENDED"
    assert side["parity"]["argmax_agreement"] >= 0.9
    model = onnx.load(str(out))
    assert _activation_zero_point_types(model) == {onnx.TensorProto.UINT8}
    assert any(n.op_type == "MatMulIntegerToFloat" for n in model.graph.node), "ORT's fused integer matmuls"
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits = sess.run(None, _feeds())[0]
    assert logits.shape == (2, 2) and np.isfinite(logits).all()
    assert not list(tmp_path.glob(".*tmp*"))


def test_target_trt_is_the_default_symmetric_int8(exports, glue_dir, tmp_path):
    out = tmp_path / "v3.trt.int8.onnx"
    res = calibrate(_cfg(exports, glue_dir, out))
    assert res.metadata["target"] == "trt" and "ort_optimized" not in res.metadata
    assert res.metadata["quantization"]["policy"]["activation_type"] == "int8"
    assert _activation_zero_point_types(onnx.load(str(out))) == {onnx.TensorProto.INT8}


def test_explicit_activations_win_and_bad_targets(exports, glue_dir, tmp_path):
    assert _cfg(exports, glue_dir, tmp_path / "a.onnx", target="ort", activations="int8").policy.activation_type == "int8"
    assert _cfg(exports, glue_dir, tmp_path / "a.onnx", activations="uint8").policy.activation_type == "uint8"
    assert _cfg(exports, glue_dir, tmp_path / "a.onnx", target="ort").policy.activation_type == "uint8"
    with pytest.raises(ConfigError, match="--target"):
        _cfg(exports, glue_dir, tmp_path / "a.onnx", target="gpu")
    with pytest.raises(ConfigError, match="--target ort applies to --precision int8"):
        _cfg(exports, glue_dir, tmp_path / "a.onnx", target="ort", precision="fp16")


def test_cli_target_ort(exports, glue_dir, tmp_path):
    out = tmp_path / "cli.ort.int8.onnx"
    p = subprocess.run([sys.executable, "-m", "debx", "calibrate", str(exports["v3"]), "-t", "sst2", "-o", str(out),
                        "--data-dir", str(glue_dir), "--method", "minmax", "--num-samples", "8", "--target", "ort",
                        "--threads", "1"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr
    side = json.loads(out.with_name(out.name + ".json").read_text())
    assert side["target"] == "ort" and side["quantization"]["policy"]["activation_type"] == "uint8"


@pytest.mark.parametrize("attention", ["debx", "fast"])
def test_cpu_export_calibrated_for_ort_evaluates(tiny_checkpoints, glue_dir, tmp_path, attention):
    """The quickstart's path (`debx export --attention debx` -> `debx calibrate --target ort` -> `debx eval`), and the
    same with the standard-ops `fast` emission."""
    import onnx

    from debx.evaluate import EvalConfig, evaluate
    from debx.exporters.export import ExportConfig, export_onnx

    fp32 = export_onnx(ExportConfig(tiny_checkpoints["v3"], tmp_path / f"v3.{attention}.onnx", attention=attention,
                                    validate=False)).output
    out = tmp_path / f"v3.{attention}.int8.onnx"
    res = calibrate(CalibrateConfig(model=fp32, output=out, task="sst2", data_dir=glue_dir, method="minmax",
                                    num_samples=16, threads=1, target="ort"))
    assert res.metadata["attention"] == attention and res.metadata["target"] == "ort"
    assert res.metadata["parity"]["argmax_agreement"] >= 0.9
    ops = [(n.domain, n.op_type) for n in onnx.load(str(out), load_external_data=False).graph.node]
    assert ("com.microsoft", "SkipLayerNormalization") not in ops  # split back: ORT's CPU kernel for it is slow
    assert ("", "Sum") in ops and ("com.microsoft", "MatMulIntegerToFloat") in ops
    assert (ops.count(("debx", "DebxDisentangledAttention")) > 0) == (attention == "debx")
    report = evaluate(EvalConfig(task="sst2", engine=out, data_dir=glue_dir, limit=16, progress=False)).report
    assert report["engine"]["precision"] == "int8" and report["n_examples"] == 16
