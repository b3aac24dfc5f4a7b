"""The CPU references of the custom attention ops against debx.model.disentangled_attention, and their
registration with ONNX Runtime (FP32 and FP16 graphs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from debx.model import MASK_FILL, disentangled_attention, relative_index, relative_index_table
from debx.runtimes.reference_ops import (
    DEBX_DOMAIN,
    DEBX_OP,
    TRT_OP,
    debx_attention_reference,
    spec_relative_index,
    trt_disentangled_reference,
    trt_relative_index,
)

# (position_buckets, max_relative_positions, span, N, c2p, p2c)
CASES = [
    (64, 128, 64, 100, 1, 1),  # v3-like, log region reached (|i-j| > 32)
    (256, 512, 256, 300, 1, 1),  # v3-base proportions
    (16, 128, 16, 77, 1, 1),  # max_rel != 2 * buckets (v2-style config)
    (0, 16, 16, 40, 1, 1),  # v1: linear, N > span (clamped slots)
    (0, 128, 128, 9, 1, 1),  # v2 without buckets
    (16, 128, 16, 33, 1, 0),  # c2p only
    (16, 128, 16, 33, 0, 1),  # p2c only
    (16, 128, 16, 12, 0, 0),  # no relative terms
    (64, 128, 64, 1, 1, 1),  # one token
]


def _inputs(B, N, H, D, P, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, N, H * D, generator=g) * 2 for _ in range(3))
    pk, pq = torch.randn(P, H * D, generator=g) * 2, torch.randn(P, H * D, generator=g) * 2
    mask = torch.ones(B, N, dtype=torch.int32)
    if B > 1:
        mask[1, max(1, N // 2):] = 0  # padded row
    if B > 2:
        mask[2, :] = 0  # fully padded row: uniform weights, as Hugging Face
    return q, k, v, pk, pq, mask


@pytest.mark.parametrize("buckets, max_rel, span, n, c2p, p2c", CASES)
def test_debx_reference_matches_the_model_attention(buckets, max_rel, span, n, c2p, p2c):
    B, H, D = 3, 4, 8
    q, k, v, pk, pq, mask = _inputs(B, n, H, D, 2 * span)
    kw = dict(num_heads=H, scale=0.2, span=span, position_buckets=buckets, max_relative_positions=max_rel, c2p=c2p,
              p2c=p2c)
    want = disentangled_attention(q, k, v, pk, pq, mask, **kw).numpy()
    got = debx_attention_reference(*(t.numpy() for t in (q, k, v, pk, pq, mask)), **kw)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_the_position_terms_matter():
    """Guard against a reference that silently ignores positions: changing a table changes the output."""
    B, H, D, span, n = 2, 4, 8, 64, 50
    q, k, v, pk, pq, mask = _inputs(B, n, H, D, 2 * span)
    kw = dict(num_heads=H, scale=0.2, span=span, position_buckets=64, max_relative_positions=128, c2p=1, p2c=1)
    base = debx_attention_reference(*(t.numpy() for t in (q, k, v, pk, pq, mask)), **kw)
    for i in (3, 4):
        args = [t.numpy().copy() for t in (q, k, v, pk, pq, mask)]
        args[i] = np.roll(args[i], 1, axis=0)
        assert np.abs(debx_attention_reference(*args, **kw) - base).max() > 1e-2


@pytest.mark.parametrize("buckets, max_rel, n", [(64, 128, 128), (256, 512, 512), (16, 128, 100), (0, 16, 40)])
def test_spec_index_matches_the_model_index(buckets, max_rel, n):
    span = buckets if buckets > 0 else max_rel
    model_idx = relative_index(relative_index_table(n, span, buckets, max_rel), n).numpy()
    np.testing.assert_array_equal(spec_relative_index(n, span, buckets, max_rel), model_idx)


@pytest.mark.parametrize("span, n", [(16, 32), (64, 128), (128, 256), (256, 512), (256, 1024)])
def test_trt_bucket_index_equals_huggingface_when_table_is_twice_the_buckets(span, n):
    hf = relative_index(relative_index_table(n, span, span, 2 * span), n).numpy()
    np.testing.assert_array_equal(trt_relative_index(n, span, 2 * span), hf)


def test_trt_bucket_index_differs_otherwise():
    """Why `--attention trt` refuses max_relative_positions != 2 * position_buckets."""
    span, n, max_rel = 16, 100, 128
    hf = relative_index(relative_index_table(n, span, span, max_rel), n).numpy()
    assert (trt_relative_index(n, span, 2 * span) != hf).any()


@pytest.mark.parametrize("span, n", [(64, 100), (256, 300), (16, 5)])
def test_trt_reference_gives_the_model_attention(span, n):
    B, H, D = 3, 4, 8
    P = 2 * span
    q, k, v, pk, pq, mask = _inputs(B, n, H, D, P)
    want = disentangled_attention(q, k, v, pk, pq, mask, num_heads=H, scale=0.2, span=span, position_buckets=span,
                                  max_relative_positions=2 * span).numpy()
    qh, kh = (t.view(B, n, H, D).transpose(1, 2) for t in (q, k))
    c2c = (qh @ kh.transpose(-1, -2)).reshape(B * H, n, n)
    c2p = (qh @ pk.view(P, H, D).permute(1, 2, 0)).reshape(B * H, n, P)
    p2c = (kh @ pq.view(P, H, D).permute(1, 2, 0)).reshape(B * H, n, P)
    s = trt_disentangled_reference(c2c.numpy(), c2p.numpy(), p2c.numpy(), span=span, factor=0.2).reshape(B, H, n, n)
    keep = mask.numpy().astype(bool)
    s = np.where(keep[:, None, :, None] & keep[:, None, None, :], s, MASK_FILL)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    got = (p @ v.view(B, n, H, D).transpose(1, 2).numpy()).transpose(0, 2, 1, 3).reshape(B, n, H * D)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


def test_trt_reference_checks_the_table_width():
    x = np.zeros((2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="2\\*span"):
        trt_disentangled_reference(x, np.zeros((2, 4, 6), np.float32), np.zeros((2, 4, 6), np.float32), span=4,
                                   factor=0.5)


# ---------------------------------------------------------------------------------------------------------------------
# In ONNX Runtime
# ---------------------------------------------------------------------------------------------------------------------


def _one_node_model(op: str, dtype: str):
    import onnx
    from onnx import TensorProto, helper

    ft = TensorProto.FLOAT16 if dtype == "float16" else TensorProto.FLOAT
    if op == DEBX_OP:
        ins = [helper.make_tensor_value_info(n, ft, s) for n, s in
               [("q", ["B", "N", 32]), ("k", ["B", "N", 32]), ("v", ["B", "N", 32]), ("pk", [128, 32]),
                ("pq", [128, 32])]] + [helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "N"])]
        node = helper.make_node(DEBX_OP, [i.name for i in ins], ["out"], domain=DEBX_DOMAIN, name="attn",
                                num_heads=4, scale=0.2, span=64, position_buckets=64, max_relative_positions=128,
                                c2p=1, p2c=1)
        opsets = [helper.make_opsetid("", 17), helper.make_opsetid(DEBX_DOMAIN, 1)]
        out = helper.make_tensor_value_info("out", ft, ["B", "N", 32])
    else:
        ins = [helper.make_tensor_value_info(n, ft, s) for n, s in
               [("c2c", ["BH", "N", "N"]), ("c2p", ["BH", "N", 128]), ("p2c", ["BH", "N", 128])]]
        node = helper.make_node(TRT_OP, [i.name for i in ins], ["out"], name="trt", span=64, factor=0.2,
                                plugin_version="1", plugin_namespace="")
        opsets = [helper.make_opsetid("", 17)]
        out = helper.make_tensor_value_info("out", ft, ["BH", "N", "N"])
    graph = helper.make_graph([node], "one", ins, [out])
    return helper.make_model(graph, opset_imports=opsets, ir_version=onnx.IR_VERSION - 1)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_debx_node_runs_in_onnxruntime(dtype):
    from debx.runtimes.onnxruntime import session_for_model

    q, k, v, pk, pq, mask = _inputs(3, 70, 4, 8, 128)
    sess = session_for_model(_one_node_model(DEBX_OP, dtype))
    feeds = {n: t.numpy().astype(dtype) for n, t in zip(("q", "k", "v", "pk", "pq"), (q, k, v, pk, pq))}
    feeds["mask"] = mask.numpy()
    got = sess.run(None, feeds)[0]
    assert got.dtype == np.dtype(dtype)
    args = [torch.from_numpy(feeds[n].astype(np.float32)) for n in ("q", "k", "v", "pk", "pq")]
    want = disentangled_attention(*args, mask, num_heads=4, scale=0.2, span=64, position_buckets=64,
                                  max_relative_positions=128).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-5 if dtype == "float32" else 3e-3, rtol=0)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_trt_node_runs_in_onnxruntime(dtype):
    from debx.runtimes.onnxruntime import session_for_model

    rng = np.random.default_rng(0)
    feeds = {"c2c": rng.normal(size=(8, 20, 20)), "c2p": rng.normal(size=(8, 20, 128)),
             "p2c": rng.normal(size=(8, 20, 128))}
    feeds = {k: v.astype(dtype) for k, v in feeds.items()}
    got = session_for_model(_one_node_model(TRT_OP, dtype)).run(None, feeds)[0]
    assert got.dtype == np.dtype(dtype) and got.shape == (8, 20, 20)
    want = trt_disentangled_reference(*(feeds[k].astype(np.float32) for k in ("c2c", "c2p", "p2c")), span=64,
                                      factor=0.2)
    np.testing.assert_allclose(got.astype(np.float32), want, atol=1e-5 if dtype == "float32" else 2e-3, rtol=0)


def test_plain_onnxruntime_cannot_run_custom_nodes_without_the_references():
    """The file on disk is untouched: only the in-memory copy is adapted for ONNX Runtime."""
    import onnxruntime as ort

    model = _one_node_model(DEBX_OP, "float32")
    with pytest.raises(Exception):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
