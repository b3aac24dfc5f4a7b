"""debx.artifacts: refusing outputs that are inputs, the staged multi-file commit, file modes under the umask."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from debx.artifacts import refuse_overwriting_inputs
from debx.errors import ConfigError


def test_an_output_that_is_an_input_is_refused(tmp_path, monkeypatch):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"graph")
    (tmp_path / "m.onnx.json").write_text('{"external_data": "m.onnx.1a2b.data"}')
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text("{}")
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    hard = tmp_path / "hard.onnx"
    os.link(model, hard)
    monkeypatch.chdir(tmp_path)
    for out in (model, Path("m.onnx"), Path("sub/../m.onnx"), link, hard, tmp_path / "m.onnx.json",
                tmp_path / "m.onnx.data", tmp_path / "m.onnx.1a2b.data"):
        with pytest.raises(ConfigError, match="--report .*the input .*m.onnx; choose another output"):
            refuse_overwriting_inputs({"--report": out}, [None, model])
    for out in (ckpt, ckpt / "config.json", ckpt / "model.safetensors"):
        with pytest.raises(ConfigError, match="ckpt"):
            refuse_overwriting_inputs({"--json": out}, [ckpt])
    with pytest.raises(ConfigError, match="same file"):
        refuse_overwriting_inputs({"--json": tmp_path / "x.json", "--plot": Path("x.json")}, [model])
    # outputs beside the inputs are fine
    refuse_overwriting_inputs({"--report": tmp_path / "report.json", "--plot": ckpt / "bench.png"}, [model, ckpt])
    assert model.read_bytes() == b"graph"
