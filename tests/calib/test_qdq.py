"""Q/DQ placement: which matmuls get pairs, per-channel symmetric INT8 weights, float LayerNorm/Softmax/gathers,
attention kinds, exclusions, plugin graphs; the INT8 models run in ONNX Runtime close to FP32."""

from __future__ import annotations

import collections

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper

from debx.calib.calibrate import parity
from debx.calib.qdq import QDQPolicy, place_qdq, qdq_summary, quantize_int8
from debx.calib.ranges import RangeConfig, compute_ranges
from debx.errors import ConfigError


def load(path):
    import onnx

    return onnx.load(str(path))


LINEAR_PER_LAYER = 6  # query, key, value, attention output, FFN in, FFN out


@pytest.fixture(scope="module")
def v3(exports, calib_batches, tmp_path_factory):
    model = load(exports["v3"])
    ranges = compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path_factory.mktemp("r"))
    return model, ranges


def _quantize(v3, tmp_path, **policy):
    model, ranges = v3
    return quantize_int8(model, ranges, QDQPolicy(**policy), tmp_path)


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def test_matmuls_are_classified(v3):
    placement = place_qdq(v3[0], QDQPolicy())
    kinds = collections.Counter(placement.kinds.values())
    assert kinds == {"linear": 2 * LINEAR_PER_LAYER + 2, "scores": 2, "position": 4, "context": 2}  # + pooler, classifier
    assert len(placement.quantize) == 14 and all(placement.kinds[n] == "linear" for n in placement.quantize)
    assert all("attention matmul" in why for why in placement.float_nodes.values())


def test_default_policy_writes_int8_per_channel_symmetric_weights(v3, tmp_path):
    q, placement = _quantize(v3, tmp_path)
    summary = qdq_summary(q)
    assert summary == {"QuantizeLinear": 14, "DequantizeLinear": 28, "per_channel_weights": 14, "int8_weights": 14}
    inits = {t.name: t for t in q.graph.initializer}
    producer = _producers(q)
    nodes = {n.name: n for n in q.graph.node}
    for name in placement.quantize:
        node = nodes[name]
        act_dq, w_dq = producer[node.input[0]], producer[node.input[1]]
        assert act_dq.op_type == w_dq.op_type == "DequantizeLinear"
        w = inits[w_dq.input[0]]
        assert w.data_type == TensorProto.INT8
        scale = numpy_helper.to_array(inits[w_dq.input[1]])
        zp = numpy_helper.to_array(inits[w_dq.input[2]])
        axis = next(a.i for a in w_dq.attribute if a.name == "axis")
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        assert axis == (0 if trans_b else 1)  # the output channel
        assert scale.shape == (w.dims[axis],) and (zp == 0).all() and zp.dtype == np.int8
        assert numpy_helper.to_array(w).min() >= -127  # symmetric: -128 is never used
        act_q = producer[act_dq.input[0]]
        assert act_q.op_type == "QuantizeLinear" and numpy_helper.to_array(inits[act_q.input[2]]).item() == 0
        assert inits[act_q.input[2]].data_type == TensorProto.INT8 and numpy_helper.to_array(inits[act_q.input[1]]).size == 1
    # biases stay float, no matmul output is quantized
    assert not any(n.op_type == "QuantizeLinear" and producer.get(n.input[0]) is not None
                   and producer[n.input[0]].name in placement.quantize for n in q.graph.node)
    assert not any(t.data_type == TensorProto.INT32 for t in q.graph.initializer if t.name.endswith("quantized"))


def test_layernorm_softmax_and_gathers_stay_float(v3, tmp_path):
    q, _ = _quantize(v3, tmp_path, attention="all")
    producer = _producers(q)
    ops = collections.Counter(n.op_type for n in q.graph.node)
    original = collections.Counter(n.op_type for n in v3[0].graph.node)
    for op in ("LayerNormalization", "Softmax", "GatherElements", "Gather"):
        assert ops[op] == original[op]
    for node in q.graph.node:
        if node.op_type in ("LayerNormalization", "Softmax", "GatherElements", "Gather", "Erf", "Where"):
            assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input), node.name


def test_attention_kinds_can_be_switched_on(v3, tmp_path):
    q, placement = _quantize(v3, tmp_path, attention=("scores", "context"))
    assert len(placement.quantize) == 14 + 4
    assert collections.Counter(placement.kinds[n] for n in placement.quantize) == {"linear": 14, "scores": 2,
                                                                                   "context": 2}
    q_all, placement_all = _quantize(v3, tmp_path, attention="all")
    assert len(placement_all.quantize) == 22 and qdq_summary(q_all)["QuantizeLinear"] > qdq_summary(q)["QuantizeLinear"]
    with pytest.raises(ConfigError, match="kind"):
        QDQPolicy(attention=("everything",))


def test_exclusions_keep_nodes_float(v3, tmp_path):
    first = place_qdq(v3[0], QDQPolicy()).quantize[0]
    q, placement = _quantize(v3, tmp_path, exclude=(first,), exclude_patterns=("classifier",))
    assert first not in placement.quantize and placement.float_nodes[first].startswith("excluded")
    assert not any("classifier" in n for n in placement.quantize)
    producer = _producers(q)
    node = next(n for n in q.graph.node if n.name == first)
    assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input)


def test_uint8_activations_for_ort_only(v3, tmp_path):
    q, _ = _quantize(v3, tmp_path, activation_type="uint8")
    inits = {t.name: t for t in q.graph.initializer}
    zps = [inits[n.input[2]] for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.data_type == TensorProto.UINT8 for z in zps)


@pytest.mark.parametrize("policy", [{}, {"attention": "all"}, {"activation_type": "uint8"}])
def test_int8_runs_in_onnxruntime_close_to_fp32(v3, calib_batches, tmp_path, policy):
    q, _ = _quantize(v3, tmp_path, **policy)
    p = parity(v3[0], q, calib_batches.batches)
    logits_scale = max(np.abs(parity_ref_logits(v3[0], calib_batches.batches)).max(), 1.0)
    assert 0 < p["max_abs_diff"] < 0.1 * logits_scale
    assert p["argmax_agreement"] >= 0.9


def parity_ref_logits(model, batches):
    from debx.runtimes.onnxruntime import session_for_model

    s = session_for_model(model)
    return np.concatenate([s.run(None, b)[0] for b in batches])


@pytest.mark.parametrize("name, custom_op", [("v3-debx", "DebxDisentangledAttention"),
                                             ("v3-trt", "DisentangledAttention_TRT")])
def test_plugin_graphs_keep_their_custom_node_in_float(exports, calib_batches, tmp_path, name, custom_op):
    model = load(exports[name])
    ranges = compute_ranges(model, calib_batches.batches, RangeConfig("minmax"), tmp_path)
    q, placement = quantize_int8(model, ranges, QDQPolicy(attention="all"), tmp_path)
    custom = [n for n in q.graph.node if n.op_type == custom_op]
    assert len(custom) == 2  # one per layer, unchanged
    producer = _producers(q)
    consumers = collections.defaultdict(list)
    for n in q.graph.node:
        for i in n.input:
            consumers[i].append(n.op_type)
    before = {n.name: n for n in model.graph.node if n.op_type == custom_op}
    for node in custom:
        assert all(producer.get(i) is None or producer[i].op_type != "DequantizeLinear" for i in node.input)
        assert node.attribute == before[node.name].attribute and node.domain == before[node.name].domain
        # its (float) output may feed the Q of the next matmul's input, never a DQ of its own
        assert "DequantizeLinear" not in consumers[node.output[0]]
    assert sum(k == "linear" for k in placement.kinds.values()) == 14
    p = parity(model, q, calib_batches.batches)
    assert p["argmax_agreement"] >= 0.9 and p["max_abs_diff"] < 0.5
