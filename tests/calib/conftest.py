"""Fixtures for the calibration tests: FP32 exports of the shared tiny checkpoints (tests/conftest.py) and
calibration batches for them. Built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exports(tmp_path_factory, tiny_checkpoints) -> dict[str, Path]:
    """{name: FP32 .onnx} — v3 in the portable mode ("v3"), v3 with the debx plugin node ("v3-debx"), v3 with
    TensorRT's DisentangledAttention_TRT ("v3-trt"), and v2 (token type ids, nGiE conv)."""
    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("calib-exports")
    specs = {"v3": ("v3", "onnx"), "v3-debx": ("v3", "debx"), "v3-trt": ("v3", "trt"), "v2": ("v2", "onnx")}
    return {name: export_onnx(ExportConfig(checkpoint=tiny_checkpoints[variant], output=root / f"{name}.onnx",
                                           attention=mode, validate=False)).output
            for name, (variant, mode) in specs.items()}


@pytest.fixture(scope="session")
def calib_batches(tiny_checkpoints, glue_dir):
    """32 SST-2 train rows for the v3 checkpoint (input_ids, attention_mask), 4 length-sorted batches."""
    from debx.calib.data import CalibDataConfig, calibration_data
    from debx.tokenizer import load_tokenizer

    tok = load_tokenizer(tiny_checkpoints["v3"])
    cfg = CalibDataConfig(task="sst2", data_dir=glue_dir, num_samples=32, seed=0, batch_size=8)
    return calibration_data(cfg, tok, ["input_ids", "attention_mask"], 128)

