"""Per-node INT8 sensitivity (local error with the model's own scales) and the --auto fallback steps."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from debx.calib.qdq import QDQPolicy, quantize_int8
from debx.calib.ranges import RangeConfig, compute_ranges
from debx.calib.sensitivity import AutoConfig, auto_fallback, fake_quantize, node_errors
from debx.gate import GateResult


def test_fake_quantize_is_symmetric_int8_rounding():
    x = np.array([-2.0, -0.004, 0.0, 0.006, 1.0, 3.0])
    np.testing.assert_allclose(fake_quantize(x, 0.01, 0, -128, 127), [-1.28, 0.0, 0.0, 0.01, 1.0, 1.27])


def _two_layer(outlier: bool):
    """x (B, 8) -> MatMul(a) -> h -> MatMul(b) -> y. With `outlier`, feature 0 of x is huge on one row, which
    blows up the activation scale of node a only (that feature's weights are zero, so h stays tame)."""
    rng = np.random.default_rng(0)
    wa = rng.normal(0, 0.5, (8, 8)).astype(np.float32)
    wa[0] = 0.0  # the outlier feature does not reach h: only node a sees it
    wb = rng.normal(0, 0.5, (8, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "wa"], ["h"], name="a"),
             helper.make_node("MatMul", ["h", "wb"], ["y"], name="b")]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 3])],
                          [numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wb, "wb")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = rng.normal(0, 1, (64, 8)).astype(np.float32)
    if outlier:
        x[0, 0] = 500.0
    return model, [{"x": x[i:i + 16]} for i in range(0, 64, 16)]


def test_outlier_input_makes_its_node_the_most_sensitive(tmp_path):
    model, batches = _two_layer(outlier=True)
    ranges = compute_ranges(model, batches, RangeConfig("minmax"), tmp_path)
    q, placement = quantize_int8(model, ranges, QDQPolicy(), tmp_path)
    errors = node_errors(model, q, placement.quantize, batches)
    assert set(errors) == {"a", "b"} and errors["a"] > 5 * errors["b"] > 0
    clean_model, clean_batches = _two_layer(outlier=False)
    clean_ranges = compute_ranges(clean_model, clean_batches, RangeConfig("minmax"), tmp_path)
    q2, p2 = quantize_int8(clean_model, clean_ranges, QDQPolicy(), tmp_path)
    clean = node_errors(clean_model, q2, p2.quantize, clean_batches)
    assert 0 < clean["a"] < 0.02 and 0 < clean["b"] < 0.02  # 8-bit: about 1% relative error


def test_node_errors_on_the_tiny_model(exports, calib_batches, tmp_path):
    model = onnx.load(str(exports["v3"]))
    ranges = compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path)
    q, placement = quantize_int8(model, ranges, QDQPolicy(attention="all"), tmp_path)
    errors = node_errors(model, q, placement.quantize, calib_batches.batches)
    assert set(errors) == set(placement.quantize) and len(errors) == 22
    assert all(0 < e < 0.5 for e in errors.values())


class _ScriptedGate:
    """Stands in for the dev-set evaluation: passes once at least `needed` nodes are back in float."""

    def __init__(self, needed: int, total: int):
        self.needed, self.total, self.seen = needed, total, []

    def __call__(self, model):
        in_float = sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm")) - self._quantized(model)
        self.seen.append(in_float)
        passed = in_float >= self.needed
        return GateResult("sst2", "accuracy", "paper", 90.0, 90.0 - (0 if passed else 1), 0.0 if passed else -1.0,
                          -1.5, 0.5, 0.95, 0.3, 0.01, 100, passed)

    @staticmethod
    def _quantized(model):
        producer = {o: n for n in model.graph.node for o in n.output}
        return sum(1 for n in model.graph.node if n.op_type in ("MatMul", "Gemm")
                   and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input))


def test_auto_moves_the_most_sensitive_nodes_back_until_the_gate_passes(exports, calib_batches, tmp_path):
    model = onnx.load(str(exports["v3"]))
    ranges = compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path)
    gate = _ScriptedGate(needed=8 + 3, total=22)  # 8 attention matmuls are float by policy; 3 more must go
    res = auto_fallback(model, ranges, QDQPolicy(), calib_batches.batches, gate, AutoConfig(max_steps=10, step=1),
                        tmp_path)
    assert res.passed and len(res.steps) == 4 and [s["passed"] for s in res.steps] == [False] * 3 + [True]
    ranked = sorted(res.errors, key=lambda n: -res.errors[n])
    assert res.steps[-1]["float_nodes"] == ranked[:3]  # most sensitive first
    assert [s["moved_to_float"] for s in res.steps[1:]] == [[ranked[0]], [ranked[1]], [ranked[2]]]
    assert len(res.placement.quantize) == 14 - 3 and set(ranked[:3]) <= set(res.policy.exclude)
    assert res.to_dict()["sensitivity"][0]["node"] == ranked[0]


def test_auto_reports_when_it_cannot_pass(exports, calib_batches, tmp_path):
    model = onnx.load(str(exports["v3"]))
    ranges = compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path)
    res = auto_fallback(model, ranges, QDQPolicy(), calib_batches.batches, _ScriptedGate(needed=99, total=22),
                        AutoConfig(max_steps=2, step=2), tmp_path)
    assert not res.passed and len(res.steps) == 3 and len(res.steps[-1]["float_nodes"]) == 4
