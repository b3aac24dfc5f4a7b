"""exporters/ort_optimize.py graph rewrites on small synthetic graphs: the residual Add written as Sum survives ONNX
Runtime's optimiser unfused, and SkipLayerNormalization splits back into Sum + LayerNormalization with equal output."""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from debx.exporters.ort_optimize import residual_adds_as_sum, split_skip_layernorm  # noqa: E402

H = 16


def _residual_ln_graph():
    """y = LayerNorm(x + r) * gamma + beta, with a constant bias Add before it that must stay an Add."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(H).astype(np.float32), n) for n in ("bias", "gamma", "beta")]
    nodes = [helper.make_node("Add", ["x", "bias"], ["xb"], name="bias_add"),
             helper.make_node("Add", ["xb", "r"], ["s"], name="residual"),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-7, name="ln")]
    fl = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "N", H])  # noqa: E731
    g = helper.make_graph(nodes, "g", [fl("x"), fl("r")], [fl("y")], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _optimized_ops(model, tmp_path, level="ORT_ENABLE_ALL") -> tuple[list[str], ort.InferenceSession]:
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node], sess


def _feeds():
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((2, 5, H)).astype(np.float32), "r": rng.standard_normal((2, 5, H)).astype(np.float32)}


def test_onnxruntime_fuses_the_plain_graph_but_not_the_sum(tmp_path):
    plain = _residual_ln_graph()
    ops, ref = _optimized_ops(plain, tmp_path)
    assert "SkipLayerNormalization" in ops  # the premise: the session fuses Add -> LayerNormalization
    rewritten = _residual_ln_graph()
    assert residual_adds_as_sum(rewritten) == 1
    assert [n.op_type for n in rewritten.graph.node] == ["Add", "Sum", "LayerNormalization"]  # bias Add untouched
    ops, sess = _optimized_ops(rewritten, tmp_path)
    assert "SkipLayerNormalization" not in ops
    feeds = _feeds()
    np.testing.assert_allclose(sess.run(None, feeds)[0], ref.run(None, feeds)[0], atol=1e-5)


def test_split_skip_layernorm_restores_plain_ops_with_the_same_output(tmp_path):
    ops, fused_sess = _optimized_ops(_residual_ln_graph(), tmp_path, "ORT_ENABLE_EXTENDED")
    fused = onnx.load(str(tmp_path / "opt.onnx"))
    assert "SkipLayerNormalization" in ops
    assert split_skip_layernorm(fused) == ops.count("SkipLayerNormalization")
    after = [n.op_type for n in fused.graph.node]
    assert "SkipLayerNormalization" not in after and "Sum" in after and "LayerNormalization" in after
    onnx.checker.check_model(fused)
    ops2, sess = _optimized_ops(fused, tmp_path)
    assert "SkipLayerNormalization" not in ops2  # and the session does not rebuild it
    feeds = _feeds()
    np.testing.assert_allclose(sess.run(None, feeds)[0], fused_sess.run(None, feeds)[0], atol=1e-5)
