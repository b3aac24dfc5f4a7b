"""The fast CPU attention emission (exporters/fastpath.py): exact against the PyTorch reference, and free of the
broadcast copies it exists to remove."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from debx.model import DebertaConfig, DisentangledSelfAttention, disentangled_attention, relative_index, \
    relative_index_table
from debx.exporters.fastpath import FastEmission, emit_fast

# ---------------------------------------------------------------------------------------------------------------------
# The function itself, in PyTorch (many shapes, cheap)
# ---------------------------------------------------------------------------------------------------------------------

CONFIGS = {
    "v1-linear": dict(model_type="deberta", max_relative_positions=16, position_buckets=-1, max_position_embeddings=128),
    "v3-buckets": dict(model_type="deberta-v2", position_buckets=16, max_position_embeddings=128),
    "v2-linear": dict(model_type="deberta-v2", position_buckets=-1, max_position_embeddings=64, share_att_key=False),
    "c2p-only": dict(model_type="deberta-v2", position_buckets=16, max_position_embeddings=128, pos_att_type="c2p"),
    "p2c-only": dict(model_type="deberta-v2", position_buckets=16, max_position_embeddings=128, pos_att_type="p2c"),
}


def _attention(name: str) -> DisentangledSelfAttention:
    kw = dict(hidden_size=24, num_attention_heads=3, num_hidden_layers=1, relative_attention=True)
    kw.update(CONFIGS[name])
    return DisentangledSelfAttention(DebertaConfig(**kw)).eval()


def _reference(attn, q, k, v, pk, pq, mask, index):
    cfg = attn.cfg
    return disentangled_attention(q, k, v, pk, pq, mask, num_heads=attn.num_heads, scale=attn.scale, span=cfg.span,
                                  position_buckets=cfg.buckets, max_relative_positions=cfg.max_relative,
                                  c2p=attn.c2p, p2c=attn.p2c, index=index)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("n", [1, 2, 7, 15, 16, 17, 33, 64, 127])
def test_emission_matches_reference(name, n):
    attn = _attention(name)
    cfg = attn.cfg
    if n > cfg.max_position_embeddings:
        pytest.skip("longer than the model")
    g = torch.Generator().manual_seed(n)
    B, HD, P = 3, cfg.hidden_size, 2 * cfg.span
    q, k, v = (torch.randn(B, n, HD, generator=g) for _ in range(3))
    pk, pq = torch.randn(P, HD, generator=g), torch.randn(P, HD, generator=g)
    mask = torch.ones(B, n, dtype=torch.long)
    mask[1, max(1, n // 2):] = 0  # padding
    mask[2, max(1, n - 1):] = 0  # one padded token
    table = relative_index_table(cfg.max_position_embeddings, cfg.span, cfg.buckets, cfg.max_relative)
    index = relative_index(table, n)
    want = _reference(attn, q, k, v, pk, pq, mask, index)
    got = emit_fast(attn, q, k, v, pk, pq, mask, index)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)
    torch.testing.assert_close(FastEmission()(attn, q, k, v, pk, pq, mask, index), want, rtol=0, atol=2e-6)


def test_fast_emission_shares_one_plan_per_index():
    """Every layer of one forward (one index tensor) reuses the plan; a new forward (a new index) gets a new one, and
    two emissions (two exports) share nothing."""
    cfg = _attention("v3-buckets").cfg
    table = relative_index_table(cfg.max_position_embeddings, cfg.span, cfg.buckets, cfg.max_relative)
    a, b = relative_index(table, 7), relative_index(table, 7)
    e1, e2 = FastEmission(), FastEmission()
    assert e1.plan(a) is e1.plan(a)
    assert e1.plan(b) is not e2.plan(b)
    p = e1.plan(b)
    assert e1.plan(a) is not p and torch.equal(e1.plan(a).c2p_rows, p.c2p_rows)


def test_distance_rows_are_the_slots_of_each_distance():
    """c2p rows run over r = N-1 ... -(N-1), p2c rows over r = -(N-1) ... N-1 (plus one spare): at most 2N rows of
    the 2k-row table are multiplied, whatever the length."""
    from debx.exporters.fastpath import RelativePlan

    for buckets, k, L in ((256, 256, 512), (16, 16, 128), (0, 16, 64)):
        table = relative_index_table(L, k, buckets, L)
        for n in (1, 2, 5, 64, L):
            plan = RelativePlan(relative_index(table, n))
            r = torch.arange(-(n - 1), n)
            slots = table[r + L - 1]  # slot of each distance, r ascending
            assert plan.c2p_rows.shape == plan.p2c_rows.shape == (2 * n,)
            assert torch.equal(plan.p2c_rows[:-1], slots)
            assert torch.equal(plan.c2p_rows[:-1], slots.flip(0))


def test_skew_is_the_relative_shift():
    from debx.exporters.fastpath import skew

    for n in (1, 2, 3, 8):
        x = torch.randn(2, 3, n, 2 * n)
        want = torch.empty(2, 3, n, n)
        for i in range(n):
            for j in range(n):
                want[:, :, i, j] = x[:, :, i, j - i + n - 1]
        assert torch.equal(skew(x), want)


# ---------------------------------------------------------------------------------------------------------------------
# Exported graphs (ONNX Runtime against the PyTorch model)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_exports(exported):
    """`debx export --attention fast` of a variant (the normal export path, cached by tests/exporters/conftest.py)."""
    return lambda variant: exported(variant, "fast")


def _feeds(cfg, batch: int, n: int, pad_rows: bool, seed: int):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, min(cfg.vocab_size, 900), (batch, n)).astype(np.int64)
    ids[:, 0] = 1
    mask = np.ones((batch, n), np.int64)
    if pad_rows and batch > 1 and n > 2:
        mask[1, n // 2:] = 0
        ids[1, n // 2:] = cfg.pad_token_id
    feeds = {"input_ids": ids, "attention_mask": mask}
    if cfg.type_vocab_size > 0:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


@pytest.mark.parametrize("variant", ["v1", "v3", "v2", "gimlp"])
def test_exported_fast_graph_is_exact(fast_exports, tiny_checkpoints, variant):
    """FP32 logits within 1e-4 of the debx PyTorch model: odd lengths, padding, length 1 and the model limit."""
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner
    from debx.runtimes.torch import TorchRunner

    res = fast_exports(variant)
    assert res.report is not None and res.report.ok  # the exporter's own validation (GLUE sentences) passed
    assert json.loads(res.sidecar.read_text())["attention"] == "fast"
    with TorchRunner(tiny_checkpoints[variant]) as ref, OnnxRuntimeRunner(res.output, threads=1) as ort:
        limit = ref.config.max_position_embeddings
        for i, (batch, n) in enumerate([(1, 1), (2, 7), (3, 33), (2, 63), (2, limit - 1), (1, limit)]):
            feeds = _feeds(ref.config, batch, n, pad_rows=True, seed=i)
            want, got = ref.infer(feeds)["logits"], ort.infer(feeds)["logits"]
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-4, (batch, n)


@pytest.mark.parametrize("variant", ["v1", "v3"])
def test_no_broadcast_copies(fast_exports, tiny_checkpoints, variant):
    """No Expand/Tile (of a (B, H, N, P) tensor or anything else), no GatherElements, no element-wise gather of
    scores: the only Gathers on position tables pick whole rows (two per layer), and the index arithmetic is
    shared by the layers."""
    import onnx

    from debx.checkpoint import read_config

    model = onnx.load(str(fast_exports(variant).output))
    ops = Counter(n.op_type for n in model.graph.node)
    cfg, _ = read_config(tiny_checkpoints[variant])
    layers = cfg.num_hidden_layers
    assert ops["Expand"] == 0 and ops["Tile"] == 0 and ops["GatherElements"] == 0 and ops["GatherND"] == 0
    inits = {t.name: t for t in model.graph.initializer}
    table_gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits
                     and "embeddings" not in n.input[0] and len(inits[n.input[0]].dims) == 3]
    assert len(table_gathers) == 2 * layers  # pk and pq rows in distance order, per layer
    for n in table_gathers:  # (H, P, D) constants, gathered along P: whole D-float rows, no transposes after
        assert next((a.i for a in n.attribute if a.name == "axis"), 0) == 1
        assert inits[n.input[0]].dims[0] == cfg.num_attention_heads
    assert len({n.input[1] for n in table_gathers}) == 2  # the same two row lists serve every layer
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def downstream(name: str, through: tuple[str, ...], want: str, depth: int = 4) -> list:
        found = []
        for n in consumers.get(name, []):
            if n.op_type == want:
                found.append(n)
            elif n.op_type in through and depth:
                found += downstream(n.output[0], through, want, depth - 1)
        return found

    products = [m for g in table_gathers for m in downstream(g.output[0], ("Reshape", "Transpose"), "MatMul")]
    assert len(products) == 2 * layers  # one c2p and one p2c matmul per layer
    for m in products:  # each product goes through the skew (Reshape/Slice), never through a gather
        assert not downstream(m.output[0], ("Reshape", "Slice", "Transpose"), "Gather")
        assert not downstream(m.output[0], ("Reshape", "Slice", "Transpose"), "GatherElements")
        assert downstream(m.output[0], ("Reshape",), "Slice")


# ---------------------------------------------------------------------------------------------------------------------
# Offline ONNX Runtime optimisation of the INT8 graph (exporters/ort_optimize.py)
# ---------------------------------------------------------------------------------------------------------------------


def test_ort_optimize_folds_biases_and_keeps_outputs(fast_exports, tiny_checkpoints, tmp_path):
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from debx.runtimes.onnxruntime import OnnxRuntimeRunner
    from debx.runtimes.torch import TorchRunner
    from debx.exporters.ort_optimize import optimize_for_cpu

    fp32 = fast_exports("v3").output
    with TorchRunner(tiny_checkpoints["v3"]) as ref:
        cfg = ref.config
        cases = [_feeds(cfg, 2, n, pad_rows=True, seed=n) for n in (5, 17, 40)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(cases)

        def get_next(self):
            return next(self.it, None)

    int8 = tmp_path / "v3.int8.onnx"
    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=["MatMul"],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"DedicatedQDQPair": True, "OpTypesToExcludeOutputQuantization": ["MatMul"],
                                   "QuantizeBias": False})  # the placement calib/qdq.py uses
    out = tmp_path / "v3.int8.cpu.onnx"
    stats = optimize_for_cpu(int8, out)
    assert stats["bias_adds_folded"] > 0 and stats["bias_gelu_to_gelu"] == cfg.num_hidden_layers
    ops = Counter((n.domain, n.op_type) for n in onnx.load(str(out)).graph.node)
    assert ops[("com.microsoft", "BiasGelu")] == 0 and ops[("com.microsoft", "Gelu")] >= cfg.num_hidden_layers
    with_bias = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulIntegerToFloat" and len(n.input) == 7]
    assert len(with_bias) == stats["bias_adds_folded"] + stats["bias_gelu_to_gelu"]
    assert json.loads(out.with_name(out.name + ".json").read_text())["ort_optimized"]["bias_adds_folded"] > 0
    with OnnxRuntimeRunner(int8, threads=1) as a, OnnxRuntimeRunner(out, threads=1) as b:
        for feeds in cases:
            assert np.abs(a.infer(feeds)["logits"] - b.infer(feeds)["logits"]).max() <= 1e-6
