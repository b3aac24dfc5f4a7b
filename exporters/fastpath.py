"""The fast CPU emission of disentangled attention (ONNX Runtime, CPU execution provider), standard ONNX ops only.

Entry point: `emit_fast(attn, q, k, v, pk, pq, mask, index)`, the signature of every emitter in
exporters/attention.py, so the exporter can offer it as `--attention fast` (or make it the `onnx` emission) with one
registry entry. What it changes against the direct transcription of debx.model.disentangled_attention:

  1. Only the relative-position rows the current length can reach are used. The index table is monotone in i - j,
     so for a sequence of N tokens every slot lies in [lo, hi] with lo = index[0, N-1] and hi = index[N-1, 0];
     the position tables are sliced to those W = hi - lo + 1 <= 2 * min(N, k) rows in-graph (one Slice on a
     constant), which halves the c2p/p2c matmuls at N = 128 for k = 256 (255 slots instead of 512).
  2. c2p and p2c are each one matmul and one plain Gather, no broadcast copies: the (B, H, N, W) products are
     flattened to (B, H, N * W) and gathered along the last axis with an (N, N) index computed once per graph
     (shared by all layers):
        c2p[b, h, i, j] = c2p_all[b, h, i, idx(i, j)]  -> flat index i * W + idx(i, j) - lo
        p2c[b, h, i, j] = p2c_all[b, h, j, idx(i, j)]  -> flat index j * W + idx(i, j) - lo
     so there is no Expand/Tile of a (B, H, N, 2k) tensor, no GatherElements and no Transpose of a score-sized
     tensor (the p2c transpose pair of the reference disappears).
  3. The position tables are stored pre-transposed per head, (H, D, P), and the softmax scale is folded into the
     query and into the p2c table (the same trick as the `onnx` emission), so no constant is re-laid out per call.

The math is unchanged (same products, same index, same mask-by-Where with MASK_FILL and softmax), so FP32 output
matches the PyTorch reference to rounding (tests/exporters/test_fastpath.py). INT8 placement for this graph:
`quantize_fast` in exporters/fastquant.py.
"""

from __future__ import annotations

import torch

from debx.model import MASK_FILL, DisentangledSelfAttention

# ---------------------------------------------------------------------------------------------------------------------
# Relative slots the current length needs (computed once per graph, shared by every layer)
# ---------------------------------------------------------------------------------------------------------------------


class _SliceLast(torch.autograd.Function):
    """x[..., start:end] with tensor bounds: one ONNX Slice whose starts/ends are graph values (the TorchScript
    tracer would bake Python-int bounds into constants and freeze the sequence length)."""

    @staticmethod
    def forward(ctx, x, start, end):  # start, end: int64 (1,)
        return x[..., int(start[0]):int(end[0])].clone()

    @staticmethod
    def symbolic(g, x, start, end):
        axes = g.op("Constant", value_t=torch.tensor([-1], dtype=torch.long))
        return g.op("Slice", x, start, end, axes)


def slice_last(x: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    return _SliceLast.apply(x, start, end)


class RelativePlan:
    """The slot range and the two flat gather indices for one sequence length (from the (N, N) relative index)."""

    def __init__(self, index: torch.Tensor):  # (N, N) int64: slot of (query i, key j)
        n = index.shape[0]
        lo = index[0, -1].reshape(1)  # smallest slot: i - j = -(N - 1)
        hi = index[-1, 0].reshape(1)  # largest slot: i - j = N - 1
        self.start, self.end = lo, hi + 1  # (1,) each
        width = hi + 1 - lo  # (1,) W
        local = index - lo  # (N, N) slot within the slice
        ar = torch.arange(n, device=index.device)  # (N,)
        self.c2p = (ar[:, None] * width + local).reshape(-1)  # (N*N,): row i of (N, W)
        self.p2c = (ar[None, :] * width + local).reshape(-1)  # (N*N,): row j of (N, W)


_PLANS: dict[int, tuple[torch.Tensor, RelativePlan]] = {}


def relative_plan(index: torch.Tensor) -> RelativePlan:
    """One plan per index tensor: every layer of a traced graph reuses the same few nodes."""
    hit = _PLANS.get(id(index))
    if hit is not None and hit[0] is index:
        return hit[1]
    if len(_PLANS) > 8:
        _PLANS.clear()
    plan = RelativePlan(index)
    _PLANS[id(index)] = (index, plan)
    return plan


def head_major(table: torch.Tensor, heads: int) -> torch.Tensor:
    """(P, HD) position table -> (H, D, P): the right operand of a per-head matmul (folded to a constant at export)."""
    P, HD = table.shape
    return table.reshape(P, heads, HD // heads).permute(1, 2, 0)


def gather_scores(prod: torch.Tensor, flat: torch.Tensor, n: int) -> torch.Tensor:
    """(B, H, N, W) products -> (B, H, N, N) scores picked by a flat (N*N,) index: one Gather, no Expand."""
    B, H = prod.shape[0], prod.shape[1]
    return torch.index_select(prod.reshape(B, H, -1), 2, flat).reshape(B, H, n, n)


# ---------------------------------------------------------------------------------------------------------------------
# The emission
# ---------------------------------------------------------------------------------------------------------------------


def emit_fast(attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index):
    """Fast standard-ops disentangled attention; same contract as exporters.attention emitters. (B, N, HD) out."""
    B, N, HD = q.shape
    H = attn.num_heads
    D = HD // H
    s = attn.scale
    qh = (q * s).reshape(B, N, H, D).transpose(1, 2)  # (B, H, N, D), scaled
    kh = k.reshape(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    vh = v.reshape(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    scores = qh @ kh.transpose(-1, -2)  # (B, H, N, N)
    if attn.c2p or attn.p2c:
        plan = relative_plan(index)
    if attn.c2p:
        pk_t = slice_last(head_major(pk, H), plan.start, plan.end)  # (H, D, W)
        scores = scores + gather_scores(qh @ pk_t, plan.c2p, N)  # c2p: q_i . pk[idx(i, j)]
    if attn.p2c:
        pq_t = slice_last(head_major(pq * s, H), plan.start, plan.end)  # (H, D, W), scaled
        scores = scores + gather_scores(kh @ pq_t, plan.p2c, N)  # p2c: k_j . pq[idx(i, j)]
    keep = mask.to(torch.bool)
    keep = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, N, N) query and key both real tokens
    scores = torch.where(keep, scores, torch.tensor(MASK_FILL, dtype=scores.dtype))
    probs = torch.softmax(scores, dim=-1)  # (B, H, N, N)
    return (probs @ vh).transpose(1, 2).reshape(B, N, HD)  # (B, N, HD)


# ---------------------------------------------------------------------------------------------------------------------
# Exporting with it (until the exporter registers the mode itself)
# ---------------------------------------------------------------------------------------------------------------------


def export_fast(checkpoint, output, **options):
    """`debx export` with the fast emission in place of the standard one (sidecar: attention "onnx", emission
    "fast"). Uses exporters.export unchanged: the `onnx` emitter is swapped for the duration of the call."""
    import contextlib

    import exporters.attention as attention
    from exporters.export import ExportConfig, export_onnx

    @contextlib.contextmanager
    def swapped():
        saved = attention.EMITTERS["onnx"]
        attention.EMITTERS["onnx"] = emit_fast
        try:
            yield
        finally:
            attention.EMITTERS["onnx"] = saved
            _PLANS.clear()

    with swapped():
        return export_onnx(ExportConfig(checkpoint, output, attention="onnx", **options))
