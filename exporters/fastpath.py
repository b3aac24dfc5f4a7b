"""The fast CPU emission of disentangled attention (ONNX Runtime, CPU execution provider), standard ONNX ops only.

Entry point: `emit_fast(attn, q, k, v, pk, pq, mask, index)`, the signature of every emitter in
exporters/attention.py, so the exporter can offer it as `--attention fast` (or make it the `onnx` emission) with one
registry entry. What it changes against the direct transcription of debx.model.disentangled_attention:

  1. Relative positions are handled by distance, not by slot. The slot of (query i, key j) depends only on the
     distance r = i - j, so the position tables are first gathered into distance order for the current length
     (2N rows: r = N-1 ... -(N-1) for c2p, r = -(N-1) ... N-1 for p2c, plus one spare row), one Gather of whole
     table rows each. This also does the slicing: a sequence of N tokens touches at most 2N - 1 distances, so a
     128-token sequence multiplies against 256 rows instead of all 2k = 512 slots.
  2. c2p and p2c are each one matmul against that table and one "relative shift" (the Transformer-XL skew): with
     the product X (B, H, N, 2N) laid out by distance, the wanted element X[i, j - i + N - 1] sits at flat offset
     (N - 1) + i * (2N - 1) + j, so a Slice of the flattened product, a Reshape to (N, 2N - 1) rows and a Slice of
     the first N columns pick every score at once. No Expand/Tile of a (B, H, N, 2k) tensor, no GatherElements,
     no element-wise gather at all (ONNX Runtime's Gather copies one element at a time when it picks single
     floats: measured 3x slower than the GatherElements it would replace).
        c2p[i, j] = q_i . pk[idx(i, j)]  = (Q  @ PK_dist^T)[i, j - i + N - 1]          (PK_dist in c2p order)
        p2c[i, j] = k_j . pq[idx(i, j)]  = (K  @ PQ_dist^T)[j, i - j + N - 1]          (transposed once)
  3. The softmax scale is folded into the query and into the p2c table (as the `onnx` emission does), so every
     intermediate is at its final magnitude and the tables need no per-call arithmetic.

The math is unchanged (the same products, the same index, the same Where-mask with MASK_FILL and softmax), so FP32
output matches the PyTorch reference to rounding (tests/exporters/test_fastpath.py).
"""

from __future__ import annotations

import torch

from debx.model import MASK_FILL, DisentangledSelfAttention

# ---------------------------------------------------------------------------------------------------------------------
# Distance-ordered table rows for the current length (computed once per graph, shared by every layer)
# ---------------------------------------------------------------------------------------------------------------------


class RelativePlan:
    """Which table row each relative distance uses, for one sequence length (from the (N, N) relative index).

    c2p_rows[m] = idx at distance r = N-1-m (m = j - i + N - 1), p2c_rows[m] = idx at r = m-(N-1) (m = i - j + N - 1);
    both have 2N entries, the last a spare so that the skew also works for N = 1."""

    def __init__(self, index: torch.Tensor):  # (N, N) int64: slot of (query i, key j), a function of i - j
        spare = index[0, :1]  # (1,) any valid row
        # index[-1, j] = idx(N-1-j), index[0, j] = idx(-j), index[i, -1] = idx(i-N+1), index[i, 0] = idx(i)
        self.c2p_rows = torch.cat([index[-1, :], index[0, 1:], spare])  # (2N,) r = N-1 ... -(N-1), spare
        self.p2c_rows = torch.cat([index[:, -1], index[1:, 0], spare])  # (2N,) r = -(N-1) ... N-1, spare


def distance_table(table: torch.Tensor, rows: torch.Tensor, heads: int) -> torch.Tensor:
    """(P, HD) position table -> (H, 2N, D): its rows in distance order, per head. The table is laid out (H, P, D)
    first (a constant, folded at export), so one Gather of D-float rows yields the matmul operand, no Transpose."""
    P, HD = table.shape
    per_head = table.reshape(P, heads, HD // heads).transpose(0, 1)  # (H, P, D) constant
    return torch.index_select(per_head, 1, rows)  # (H, 2N, D)


def skew(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, 2N) products by distance -> (B, H, N, N) with out[i, j] = x[i, j - i + N - 1] (relative shift)."""
    B, H, n = x.shape[0], x.shape[1], x.shape[2]
    flat = x.reshape(B, H, -1)  # (B, H, 2N^2)
    flat = flat[:, :, n - 1:n - 1 + n * (2 * n - 1)]  # (B, H, N * (2N - 1)): row i starts at (N-1) + i(2N-1)
    return flat.reshape(B, H, n, 2 * n - 1)[:, :, :, :n]  # (B, H, N, N)


# ---------------------------------------------------------------------------------------------------------------------
# The emission
# ---------------------------------------------------------------------------------------------------------------------


def emit_fast(attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index, plan: RelativePlan | None = None):
    """Fast standard-ops disentangled attention; same contract as debx.exporters.attention emitters. (B, N, HD) out.
    `plan`: the distance rows of `index` when the caller already has them (FastEmission shares them by layer)."""
    B, N, HD = q.shape
    H = attn.num_heads
    D = HD // H
    s = attn.scale
    qh = (q * s).reshape(B, N, H, D).transpose(1, 2)  # (B, H, N, D), scaled
    kh = k.reshape(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    vh = v.reshape(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    scores = qh @ kh.transpose(-1, -2)  # (B, H, N, N)
    if (attn.c2p or attn.p2c) and plan is None:
        plan = RelativePlan(index)
    if attn.c2p:
        pk_d = distance_table(pk, plan.c2p_rows, H)  # (H, 2N, D)
        scores = scores + skew(qh @ pk_d.transpose(-1, -2))  # c2p[i, j] = q_i . pk[idx(i, j)]
    if attn.p2c:
        pq_d = distance_table(pq * s, plan.p2c_rows, H)  # (H, 2N, D), scaled
        scores = scores + skew(kh @ pq_d.transpose(-1, -2)).transpose(-1, -2)  # p2c[i, j] = k_j . pq[idx(i, j)]
    keep = mask.to(torch.bool)
    keep = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, N, N) query and key both real tokens
    scores = torch.where(keep, scores, torch.tensor(MASK_FILL, dtype=scores.dtype))
    probs = torch.softmax(scores, dim=-1)  # (B, H, N, N)
    return (probs @ vh).transpose(1, 2).reshape(B, N, HD)  # (B, N, HD)


class FastEmission:
    """emit_fast for one export: every layer of the traced graph reuses one RelativePlan (the same few nodes) for the
    index tensor the encoder computes once per forward. The plan lives in this object, which `export_patches` sets
    on one model's attention modules for the length of the export; nothing is cached at module level."""

    def __init__(self) -> None:
        self._index: torch.Tensor | None = None
        self._plan: RelativePlan | None = None

    def plan(self, index: torch.Tensor) -> RelativePlan:
        if self._index is not index:  # a new forward (a new index tensor): new plan
            self._index, self._plan = index, RelativePlan(index)
        return self._plan

    def __call__(self, attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index):
        plan = self.plan(index) if (attn.c2p or attn.p2c) else None
        return emit_fast(attn, q, k, v, pk, pq, mask, index, plan=plan)
