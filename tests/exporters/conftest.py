"""Exports shared by the exporter tests: each (variant, mode, precision, opset, ...) is exported once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_checkpoints, glue_dir):
    """export(variant, attention="onnx", fp16=False, **ExportConfig fields) -> ExportResult (cached)."""
    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("exports")
    cache: dict = {}

    def export(variant: str, attention: str = "onnx", fp16: bool = False, **kw):
        key = (variant, attention, fp16, tuple(sorted(kw.items())))
        if key not in cache:
            tag = "-".join(f"{k}{v}" for k, v in sorted(kw.items()))
            out = root / f"{variant}.{attention}.{'fp16' if fp16 else 'fp32'}{('.' + tag) if tag else ''}.onnx"
            cache[key] = export_onnx(ExportConfig(checkpoint=Path(tiny_checkpoints[variant]), output=out,
                                                  attention=attention, fp16=fp16, data_dir=glue_dir, **kw))
        return cache[key]

    return export
