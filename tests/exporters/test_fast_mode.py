"""`debx export --attention fast`: the fast CPU emission (exporters/fastpath.py) as a registered attention mode.
Every variant exports and validates (FP32 and FP16 also run in test_export.py's matrix); the graph holds standard ops
only and no Expand/Tile; the real CLI accepts the mode and the sidecar records it."""

from __future__ import annotations

import json
import sys
from collections import Counter

import onnx
import pytest

from debx.variants import VARIANTS


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_exports_fast_and_validates(exported, variant):
    res = exported(variant, "fast")
    rep = res.report
    assert rep.ok and rep.attention == "fast" and rep.precision == "fp32"
    assert rep.max_abs_diff <= 1e-4 and rep.argmax_agreement == 1.0
    assert max(c["seq"] for c in rep.cases) == 128  # the model limit
    g = onnx.load(str(res.output))
    ops = Counter(n.op_type for n in g.graph.node)
    assert not {"Expand", "Tile", "GatherElements"} & set(ops), ops
    assert all(n.domain in ("", "ai.onnx") for n in g.graph.node), "standard ops only"
    side = json.loads(res.sidecar.read_text())
    assert side["attention"] == "fast" and side["parity"] is not None


def test_fast_fp16_validates(exported):
    rep = exported("v3", "fast", True).report
    assert rep.ok and rep.precision == "fp16" and rep.attention == "fast"


def test_cli_accepts_fast(tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    from debx.cli import main as debx_main

    out = tmp_path / "v3.fast.onnx"
    argv = ["debx", "export", str(tiny_checkpoints["v3"]), "-o", str(out), "--attention", "fast",
            "--data-dir", str(glue_dir)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as e:
        debx_main()
    captured = capsys.readouterr()
    assert (e.value.code or 0) == 0, captured.err
    assert "validated" in captured.out
    assert json.loads(out.with_name(out.name + ".json").read_text())["attention"] == "fast"
