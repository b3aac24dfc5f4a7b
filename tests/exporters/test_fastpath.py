"""The fast CPU attention emission (exporters/fastpath.py): exact against the PyTorch reference, and free of the
broadcast copies it exists to remove."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from debx.model import DebertaConfig, DisentangledSelfAttention, disentangled_attention, relative_index, \
    relative_index_table
from exporters.fastpath import _PLANS, emit_fast, export_fast

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
    _PLANS.clear()
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6)


def test_slot_range_is_what_the_length_needs():
    """W = hi - lo + 1 is 2N - 1 while N fits the exact-bucket range, and never more than 2k."""
    from exporters.fastpath import RelativePlan

    for buckets, k, L in ((256, 256, 512), (16, 16, 128)):
        table = relative_index_table(L, k, buckets, L)
        for n in (1, 5, buckets // 2, buckets, L):
            plan = RelativePlan(relative_index(table, n))
            width = int(plan.end[0] - plan.start[0])
            assert width <= min(2 * k, 2 * n - 1 if n <= buckets // 2 else 2 * k)
            if n <= buckets // 2:
                assert width == 2 * n - 1


# ---------------------------------------------------------------------------------------------------------------------
# Exported graphs (ONNX Runtime against the PyTorch model)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fast_exports(tmp_path_factory, tiny_checkpoints, glue_dir):
    root = tmp_path_factory.mktemp("fast")
    cache = {}

    def get(variant: str):
        if variant not in cache:
            cache[variant] = export_fast(tiny_checkpoints[variant], root / f"{variant}.fast.onnx", data_dir=glue_dir)
        return cache[variant]

    return get


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
    with TorchRunner(tiny_checkpoints[variant]) as ref, OnnxRuntimeRunner(res.output, threads=1) as ort:
        limit = ref.config.max_position_embeddings
        for i, (batch, n) in enumerate([(1, 1), (2, 7), (3, 33), (2, 63), (2, limit - 1), (1, limit)]):
            feeds = _feeds(ref.config, batch, n, pad_rows=True, seed=i)
            want, got = ref.infer(feeds)["logits"], ort.infer(feeds)["logits"]
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1e-4, (batch, n)


@pytest.mark.parametrize("variant", ["v1", "v3"])
def test_no_broadcast_copies(fast_exports, tiny_checkpoints, variant):
    """No Expand/Tile (of a (B, H, N, P) tensor or anything else), no GatherElements, one Gather per c2p/p2c,
    position slices with run-time bounds, and the index arithmetic shared by the layers."""
    import onnx

    from debx.checkpoint import read_config

    model = onnx.load(str(fast_exports(variant).output))
    ops = Counter(n.op_type for n in model.graph.node)
    cfg, _ = read_config(tiny_checkpoints[variant])
    layers = cfg.num_hidden_layers
    assert ops["Expand"] == 0 and ops["Tile"] == 0 and ops["GatherElements"] == 0
    consts = {t.name for t in model.graph.initializer} | {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    slices = [n for n in model.graph.node if n.op_type == "Slice" and n.input[0] in consts]
    assert len(slices) == 2 * layers  # pk and pq per layer, each cut to the slots this length needs
    assert all(n.input[1] not in consts and n.input[2] not in consts for n in slices)  # bounds come from N
    assert ops["Range"] <= 3  # the relative index and the two flat gather indices: once per graph
    # score-sized gathers: exactly two per layer, each with a 1-D index
    score_gathers = [n for n in model.graph.node if n.op_type == "Gather"
                     and any(a.name == "axis" and a.i == 2 for a in n.attribute)]
    assert len(score_gathers) == 2 * layers
