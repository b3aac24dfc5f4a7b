"""`debx.exporters.validate` on its own: settings from the sidecar or the graph, and every failure in one error."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from debx.errors import ConfigError
from debx.runtimes.compare import Case, compare_output
from debx.exporters.onnx_config import Tolerance
from debx.exporters.validate import ValidationFailed, judge, validate_onnx, validation_cases


def test_validate_without_sidecar_reads_the_graph(exported, tiny_checkpoints, glue_dir, tmp_path):
    res = exported("v3", "trt", True)
    bare = tmp_path / "bare.onnx"
    shutil.copy(res.output, bare)
    rep = validate_onnx(bare, tiny_checkpoints["v3"], data_dir=glue_dir)
    assert (rep.precision, rep.attention) == ("fp16", "trt") and rep.ok


def test_wrong_checkpoint_fails_with_every_problem_listed(exported, tiny_checkpoints, glue_dir):
    res = exported("v3", "onnx")
    with pytest.raises(ValidationFailed) as e:
        validate_onnx(res.output, tiny_checkpoints["gimlp"], data_dir=glue_dir)  # same shapes, other weights
    msg = str(e.value)
    assert msg.count("max abs diff") >= 5 and "\n" not in msg
    rep = validate_onnx(res.output, tiny_checkpoints["gimlp"], data_dir=glue_dir, raise_on_failure=False)
    assert not rep.ok and rep.max_abs_diff > 1e-2


def test_input_names_are_checked(exported, tiny_checkpoints, glue_dir):
    res = exported("v3", "onnx")  # no token_type_ids input; the v2 checkpoint needs one
    with pytest.raises(ValidationFailed, match="inputs are"):
        validate_onnx(res.output, tiny_checkpoints["v2"], data_dir=glue_dir)


def test_missing_file_and_missing_checkpoint(tmp_path, exported):
    with pytest.raises(ConfigError, match="no such ONNX file"):
        validate_onnx(tmp_path / "none.onnx", tmp_path)
    bare = tmp_path / "bare.onnx"
    shutil.copy(exported("v3", "onnx").output, bare)
    with pytest.raises(ConfigError, match="needs the source checkpoint"):
        validate_onnx(bare)


def test_cases_cover_the_required_shapes(tiny_checkpoints, glue_dir):
    from debx.checkpoint import read_config

    cfg = read_config(tiny_checkpoints["v2"])[0]
    cases, source = validation_cases(tiny_checkpoints["v2"], cfg, 128, data_dir=glue_dir)
    assert "GLUE" in source
    by_name = {c.name: c for c in cases}
    assert by_name["1 token"].shape == (1, 1)
    assert by_name["maximum length with padding"].shape == (2, 128)
    assert by_name["maximum length with padding"].feeds["attention_mask"][0].all()  # a full row at the limit
    assert any(c.shape[0] > 1 and not c.feeds["attention_mask"].all() for c in cases)  # batches with padding
    assert by_name["pairs with padding"].feeds["token_type_ids"].max() == 1  # the second segment is typed
    pinned, _ = validation_cases(tiny_checkpoints["v2"], cfg, 128, batch=3, seq=20, data_dir=glue_dir)
    assert {c.shape for c in pinned} == {(3, 20)}


def test_builtin_sentences_when_there_is_no_glue(tiny_checkpoints, tmp_path, monkeypatch):
    from debx.checkpoint import read_config

    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no ../shared/glue from here
    monkeypatch.setattr("debx.tasks._REPO_ROOT", tmp_path)
    cfg = read_config(tiny_checkpoints["v3"])[0]
    cases, source = validation_cases(tiny_checkpoints["v3"], cfg, 128)
    assert "built-in" in source and max(c.shape[1] for c in cases) == 128


def test_near_ties_do_not_count_as_disagreement():
    case = Case("c", {"input_ids": np.zeros((3, 2), np.int64), "attention_mask": np.ones((3, 2), np.int64)})
    ref = np.array([[1.0, 0.99], [2.0, 0.0], [0.0, 1.0]], np.float32)
    cand = np.array([[0.99, 1.0], [2.0, 0.0], [0.0, 1.0]], np.float32)  # row 0 flips within 2 * atol
    d = compare_output(case, "logits", ref, cand, "rows", tie_margin=0.04)
    assert (d.argmax_total, d.argmax_same, d.argmax_near_ties) == (3, 2, 1)
    failures, worst, agreement, ties = judge([d], Tolerance(atol=0.02, argmax_agreement=0.995))
    assert failures == [] and agreement == 1.0 and ties == 1
    far = np.array([[1.0, 0.99], [0.0, 2.0], [0.0, 1.0]], np.float32)  # row 1 really flips: value and argmax fail
    failures, *_ = judge([compare_output(case, "logits", ref, far, "rows", tie_margin=0.04)],
                         Tolerance(atol=0.02, argmax_agreement=0.995))
    assert any("argmax agreement" in f for f in failures) and any("max abs diff" in f for f in failures)
