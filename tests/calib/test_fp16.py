"""FP16 from measured ranges: LayerNorm kept by policy, overflowing and underflowing tensors kept with their
reasons, the converted model runs finite and close to FP32."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from debx.calib.calibrate import parity
from debx.calib.fp16 import FP16Config, make_fp16, plan_fp16, tensor_stats


def test_tiny_model_in_fp16(exports, calib_batches):
    model = onnx.load(str(exports["v3"]))
    half, plan, stats = make_fp16(model, calib_batches.batches)
    kept = plan.to_list(model)
    assert {k["op"] for k in kept} == {"LayerNormalization"} and len(kept) == 5
    assert all(k["reason"].startswith("policy") for k in kept)
    assert sum(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer) > 10
    assert [i.type.tensor_type.elem_type for i in half.graph.output] == [TensorProto.FLOAT]
    p = parity(model, half, calib_batches.batches)
    assert p["max_abs_diff"] < 2e-2 and p["argmax_agreement"] >= 0.99
    assert max(s.amax for s in stats.values()) < 65504 / 4


def _toy(scale_up: float, scale_down: float):
    """x (B, 4) -> MatMul(W1 * scale_up) -> Relu -> MatMul(W2 * scale_down) -> Mul(1e-7) -> MatMul(W3) -> y."""
    rng = np.random.default_rng(0)
    w1 = (rng.uniform(0.5, 1.0, (4, 4)) * scale_up).astype(np.float32)
    w2 = (rng.uniform(0.5, 1.0, (4, 4)) * scale_down).astype(np.float32)
    w3 = rng.uniform(0.5, 1.0, (4, 2)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="big"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu"),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="down"),
             helper.make_node("Mul", ["h2", "tiny"], ["h3"], name="shrink"),
             helper.make_node("MatMul", ["h3", "w3"], ["y"], name="out")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3"),
             numpy_helper.from_array(np.array(1e-7, np.float32), "tiny")]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_overflow_and_underflow_are_kept_with_reasons():
    model = _toy(scale_up=9000.0, scale_down=1e-4)  # h1 ~ 2e4 (> 65504/4), h3 ~ 1e-7 (below FP16's normals)
    batches = [{"x": np.random.default_rng(i).uniform(0.5, 1.0, (3, 4)).astype(np.float32)} for i in range(2)]
    half, plan, stats = make_fp16(model, batches, FP16Config())
    assert stats["h1"].amax > 65504 / 4 and stats["h3"].tiny_share == 1.0
    assert plan.kept["big"].startswith("overflow: h1") and plan.kept["relu"].startswith("overflow")
    assert plan.kept["shrink"].startswith("underflow: 100% of the non-zero values of h3")
    assert plan.kept["out"].startswith("underflow")  # consumer of h3
    # every node is kept: no tensor may take a detour through FP16 between them
    assert not [n.name for n in half.graph.node if n.op_type == "Cast"
                and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)]
    y32 = _run(model, batches[0])
    y16 = _run(half, batches[0])
    assert np.isfinite(y16).all() and np.allclose(y16, y32, rtol=1e-5)


def test_margin_decides_overflow():
    model = _toy(scale_up=9000.0, scale_down=1.0)
    batches = [{"x": np.full((2, 4), 0.9, np.float32)}]
    stats = tensor_stats(model, batches)
    assert "big" in plan_fp16(model, stats, FP16Config(overflow_margin=4)).kept
    assert "big" not in plan_fp16(model, stats, FP16Config(overflow_margin=1)).kept  # ~2.4e4 < 65504


def test_overflow_missed_by_the_plan_is_caught_after_conversion(monkeypatch):
    """The re-check after conversion: with a plan that keeps nothing, the FP16 run shows inf in h1 (~1e5), and the
    node that wrote it goes back to FP32."""
    import debx.calib.fp16 as fp16

    model = _toy(scale_up=40000.0, scale_down=1.0)
    batches = [{"x": np.full((2, 4), 0.9, np.float32)}]
    monkeypatch.setattr(fp16, "plan_fp16", lambda model, stats, cfg: fp16.FP16Plan(keep_op_types=()))
    half, plan, _ = make_fp16(model, batches, FP16Config())
    assert "became inf/NaN in FP16" in plan.kept["big"]
    assert np.isfinite(_run(half, batches[0])).all()


def test_fp32_model_that_overflows_is_refused():
    from debx.calib.fp16 import FP16Failed

    model = _toy(scale_up=1e38, scale_down=1e38)
    with pytest.raises(FP16Failed, match="FP32 model itself"):
        make_fp16(model, [{"x": np.full((2, 4), 0.9, np.float32)}])


def _run(model, feeds):
    from debx.runtimes.onnxruntime import session_for_model

    return session_for_model(model).run(None, feeds)[0]
