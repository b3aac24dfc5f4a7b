"""The CPU build of the fused-attention kernel's algorithm against PyTorch.

debx_attention_host walks keys in the kernel's tiles with the kernel's math header (relative index, log bucket,
mask fill, online softmax). Here it is compared with two PyTorch references on real shapes: an independent one
written in this file from the op math (plugins/disentangledAttention/README.md), and debx.model.disentangled_attention
(what the model and the exporters use).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
import torch

from plugin_helpers import Params

FP32_TOL = 1e-5
FP16_TOL = 1e-2
BF16_TOL = 3e-2
PRECISION = {"fp32": 0, "fp16": 1, "bf16": 2}


# ---- independent reference, written from the op math in the plugin README -------------------------------------------


def spec_log_bucket(rel: torch.Tensor, buckets: int, max_rel: int) -> torch.Tensor:
    """Hugging Face's make_log_bucket_position, float32 like the reference."""
    mid = buckets // 2
    sign = torch.sign(rel)
    abs_pos = torch.where((rel < mid) & (rel > -mid), torch.tensor(mid - 1).type_as(rel), rel.abs())
    log_pos = torch.ceil(torch.log(abs_pos / mid) / torch.log(torch.tensor((max_rel - 1) / mid)) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, rel.type_as(log_pos), log_pos * sign).long()


def spec_attention(q, k, v, pk, pq, mask, *, num_heads, scale, span, position_buckets, max_relative_positions,
                   c2p, p2c):
    """Direct (B, H, N, N) evaluation of the op's formula, loops over nothing clever."""
    B, N, HD = q.shape
    H, D = num_heads, HD // num_heads
    qh = q.view(B, N, H, D).permute(0, 2, 1, 3)  # (B, H, N, D)
    kh = k.view(B, N, H, D).permute(0, 2, 1, 3)
    vh = v.view(B, N, H, D).permute(0, 2, 1, 3)
    r = torch.arange(N)[:, None] - torch.arange(N)[None, :]  # (N, N) i - j
    if position_buckets > 0:
        r = spec_log_bucket(r, position_buckets, max_relative_positions)
    idx = (r + span).clamp(0, 2 * span - 1)  # (N, N)
    s = torch.einsum("bhid,bhjd->bhij", qh, kh)
    if c2p:
        pkr = pk.view(-1, H, D)[idx]  # (N, N, H, D): pos_key row of every pair
        s = s + torch.einsum("bhid,ijhd->bhij", qh, pkr)
    if p2c:
        pqr = pq.view(-1, H, D)[idx]
        s = s + torch.einsum("bhjd,ijhd->bhij", kh, pqr)
    s = s * scale
    keep = mask.bool()[:, None, :, None] & mask.bool()[:, None, None, :]
    s = torch.where(keep, s, torch.tensor(-65504.0, dtype=s.dtype))
    out = torch.softmax(s, dim=-1) @ vh  # (B, H, N, D)
    return out.permute(0, 2, 1, 3).reshape(B, N, HD)


# ---- cases ------------------------------------------------------------------------------------------------------------


def make_case(*, batch, seq, heads, head_size, span, buckets, max_rel, c2p, p2c, pad=(), seed=0, pos_rows=None,
              dtype=torch.float32):
    """Random projections with DeBERTa-like magnitudes; `pad[b] = n` pads the last n tokens of row b."""
    g = torch.Generator().manual_seed(seed)
    hd = heads * head_size
    rows = pos_rows if pos_rows is not None else 2 * span
    t = lambda *shape: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    mask = torch.ones(batch, seq, dtype=torch.int32)
    for b, n in enumerate(pad):
        if n:
            mask[b, seq - n:] = 0
    attrs = dict(num_heads=heads, scale=1.0 / math.sqrt(head_size * (1 + c2p + p2c)), span=span,
                 position_buckets=buckets, max_relative_positions=max_rel, c2p=c2p, p2c=p2c)
    return (t(batch, seq, hd), t(batch, seq, hd), t(batch, seq, hd), t(rows, hd), t(rows, hd), mask), attrs


def params_of(tensors, attrs) -> Params:
    q, _, _, pk, pq, _ = tensors
    B, N, HD = q.shape
    rows = pk.shape[0] if attrs["c2p"] or not attrs["p2c"] else pq.shape[0]
    return Params(batch=B, seqLen=N, numHeads=attrs["num_heads"], headSize=HD // attrs["num_heads"],
                  span=attrs["span"], posRows=rows, positionBuckets=attrs["position_buckets"],
                  maxRelativePositions=attrs["max_relative_positions"], c2p=int(attrs["c2p"]), p2c=int(attrs["p2c"]),
                  scale=attrs["scale"])


def run_host(lib, tensors, attrs, precision="fp32") -> torch.Tensor:
    arrays = [np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in tensors[:5]]
    mask = np.ascontiguousarray(tensors[5].numpy(), dtype=np.int32)
    out = np.zeros_like(arrays[0])
    fp = lambda a: a.ctypes.data_as(ctypes.POINTER(ctypes.c_float))  # noqa: E731
    p = params_of(tensors, attrs)
    rc = lib.debx_attention_forward(ctypes.byref(p), *(fp(a) for a in arrays),
                                    mask.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), fp(out), PRECISION[precision])
    assert rc == 0, lib.debx_attention_last_error().decode()
    return torch.from_numpy(out)


def model_reference():
    """debx.model.disentangled_attention, when the model module provides it."""
    try:
        from debx.model import disentangled_attention
    except ImportError:
        return None
    return disentangled_attention


V1 = dict(heads=4, head_size=16, span=32, buckets=-1, max_rel=32)       # linear positions, span = max_rel
V3_SMALL = dict(heads=2, head_size=32, span=32, buckets=32, max_rel=64)  # log buckets, small table
V3 = dict(heads=2, head_size=64, span=256, buckets=256, max_rel=512)     # deberta-v3-base geometry per head

CASES = {
    "v1-c2p+p2c": dict(V1, c2p=1, p2c=1),
    "v1-c2p-only": dict(V1, c2p=1, p2c=0),
    "v3small-c2p+p2c": dict(V3_SMALL, c2p=1, p2c=1),
    "v3-c2p+p2c": dict(V3, c2p=1, p2c=1),
    "v3-c2p-only": dict(V3, c2p=1, p2c=0),
}


@pytest.mark.parametrize("seq", [1, 7, 33, 65, 130])
@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_matches_pytorch(host_lib, case, seq):
    cfg = dict(CASES[case])
    # Row 0 full, row 1 padded (right padding like a tokenizer batch), row 2 fully padded.
    pad = (0, seq // 3, seq)
    tensors, attrs = make_case(batch=3, seq=seq, pad=pad, seed=seq, **cfg)
    got = run_host(host_lib, tensors, attrs)
    want = spec_attention(*tensors, **attrs)
    err = (got - want).abs().max().item()
    assert err <= FP32_TOL, f"{case} N={seq}: max abs diff {err:.3g} vs the spec reference"
    ref = model_reference()
    if ref is not None:
        err_model = (got - ref(*tensors, **attrs)).abs().max().item()
        assert err_model <= FP32_TOL, f"{case} N={seq}: max abs diff {err_model:.3g} vs debx.model"


def test_fully_padded_row_is_uniform_average(host_lib):
    """A query row with mask 0 sees -65504 everywhere: uniform weights, i.e. the mean of all values (HF behaviour)."""
    tensors, attrs = make_case(batch=1, seq=9, pad=(9,), **dict(V3_SMALL, c2p=1, p2c=1))
    got = run_host(host_lib, tensors, attrs)
    mean_v = tensors[2].mean(dim=1, keepdim=True).expand_as(got)
    assert (got - mean_v).abs().max().item() <= FP32_TOL


def test_padding_does_not_leak(host_lib):
    """Real tokens must not depend on the values at padded positions."""
    tensors, attrs = make_case(batch=2, seq=20, pad=(0, 7), **dict(V1, c2p=1, p2c=1))
    base = run_host(host_lib, tensors, attrs)
    q, k, v, pk, pq, mask = tensors
    k2, v2 = k.clone(), v.clone()
    k2[1, 13:] = 100.0
    v2[1, 13:] = -100.0
    moved = run_host(host_lib, (q, k2, v2, pk, pq, mask), attrs)
    assert torch.equal(base[1, :13], moved[1, :13])
    assert torch.equal(base[0], moved[0])


@pytest.mark.parametrize("head_size", [24, 64, 128])
def test_head_sizes_not_multiple_of_warp(host_lib, head_size):
    tensors, attrs = make_case(batch=2, seq=37, pad=(0, 5), heads=3, head_size=head_size, span=16, buckets=16,
                               max_rel=40, c2p=1, p2c=1)
    err = (run_host(host_lib, tensors, attrs) - spec_attention(*tensors, **attrs)).abs().max().item()
    assert err <= FP32_TOL


@pytest.mark.slow
def test_long_sequence_beyond_max_relative(host_lib):
    """N = 600 > max_relative_positions = 512: distances past the table edge use the clamped log buckets."""
    tensors, attrs = make_case(batch=1, seq=600, heads=1, head_size=64, span=256, buckets=256, max_rel=512,
                               c2p=1, p2c=1, pad=(0,))
    err = (run_host(host_lib, tensors, attrs) - spec_attention(*tensors, **attrs)).abs().max().item()
    assert err <= FP32_TOL


def test_unused_tables_may_have_any_rows(host_lib):
    """With p2c off, pos_query is present but unused: P = 1 is accepted and changes nothing."""
    tensors, attrs = make_case(batch=2, seq=11, pad=(0, 3), **dict(V1, c2p=1, p2c=0))
    q, k, v, pk, _, mask = tensors
    tiny = (q, k, v, pk, torch.zeros(1, q.shape[-1]), mask)
    assert torch.equal(run_host(host_lib, tensors, attrs), run_host(host_lib, tiny, attrs))


@pytest.mark.parametrize("precision,tol", [("fp16", FP16_TOL), ("bf16", BF16_TOL)])
@pytest.mark.parametrize("case", ["v1-c2p+p2c", "v3-c2p+p2c"])
def test_half_precision_emulation(host_lib, case, precision, tol):
    """Inputs and outputs rounded like the kernel's FP16/BF16 loads and stores, FP32 accumulation inside."""
    tensors, attrs = make_case(batch=2, seq=65, pad=(0, 20), seed=3, **CASES[case])
    got = run_host(host_lib, tensors, attrs, precision)
    want = spec_attention(*tensors, **attrs)
    err = (got - want).abs().max().item()
    assert err <= tol, f"{precision}: max abs diff {err:.3g}"
    # Every output is representable in the target format (the store rounds).
    target = torch.float16 if precision == "fp16" else torch.bfloat16
    assert torch.equal(got, got.to(target).to(torch.float32))


def test_rounding_matches_torch(host_lib):
    x = torch.cat([torch.randn(10000) * 10, torch.tensor([65504.0, 65519.0, 65520.0, 1e-8, 6e-8, -3e-5, 0.0])])
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        a = np.ascontiguousarray(x.numpy(), dtype=np.float32)
        host_lib.debx_attention_round(a.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), a.size, PRECISION[precision])
        assert torch.equal(torch.from_numpy(a), x.to(dtype).to(torch.float32)), precision


@pytest.mark.parametrize("buckets,max_rel", [(256, 512), (32, 64), (256, 1024), (64, 512), (32, 512), (16, 128)])
def test_log_bucket_matches_reference(host_lib, buckets, max_rel):
    r = torch.arange(-2100, 2101)
    want = spec_log_bucket(r, buckets, max_rel).tolist()
    got = [host_lib.debx_attention_log_bucket(int(x), buckets, max_rel) for x in r.tolist()]
    assert got == want


def test_relative_index_matches_model_table(host_lib):
    from debx.model import relative_index, relative_index_table

    for span, buckets, max_rel, n in [(256, 256, 512, 700), (32, -1, 32, 100), (32, 32, 64, 90)]:
        table = relative_index(relative_index_table(n, span, buckets, max_rel), n)  # (N, N)
        p = Params(batch=1, seqLen=n, numHeads=1, headSize=1, span=span, posRows=2 * span, positionBuckets=buckets,
                   maxRelativePositions=max_rel, c2p=1, p2c=1, scale=1.0)
        got = torch.tensor([[host_lib.debx_attention_relative_index(i, j, ctypes.byref(p)) for j in range(0, n, 7)]
                            for i in range(0, n, 5)])
        assert torch.equal(got, table[::5, ::7]), (span, buckets, max_rel)


@pytest.mark.parametrize("field,value,message", [
    ("numHeads", 0, "num_heads"),
    ("span", 0, "span"),
    ("c2p", 2, "c2p"),
    ("posRows", 10, "2 * span"),
    ("scale", float("nan"), "scale"),
    ("maxRelativePositions", 17, "max_relative_positions"),
    ("headSize", 129, "128"),
])
def test_invalid_parameters_are_refused(host_lib, field, value, message):
    tensors, attrs = make_case(batch=1, seq=4, heads=1, head_size=8, span=16, buckets=32, max_rel=64, c2p=1, p2c=1)
    p = params_of(tensors, attrs)
    setattr(p, field, value)
    buf = np.zeros(1 << 16, dtype=np.float32)
    ptr = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    mask = np.ones(4, dtype=np.int32).ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
    assert host_lib.debx_attention_forward(ctypes.byref(p), ptr, ptr, ptr, ptr, ptr, mask, ptr, 0) != 0
    assert message in host_lib.debx_attention_last_error().decode()
