"""A Triton twin of the fused DebxDisentangledAttention kernel (same tiling idea, block-level instead of warp-level).

Runs on the CPU under TRITON_INTERPRET=1, so the flash-style algorithm (key tiles, online softmax, masked partial
tiles, gathered relative rows) is exercised as a GPU program, not only as the sequential host build. Per program:
one (batch, head) and a tile of BLOCK_Q queries; loop over key tiles of BLOCK_K.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl


@triton.jit
def _debx_attention_kernel(Q, K, V, PK, PQ, MASK, OUT, N, H, HD, D, span, buckets, log_base, scale,
                           C2P: tl.constexpr, P2C: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
                           BLOCK_D: tl.constexpr):
    pid_q = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    offs_d = tl.arange(0, BLOCK_D)
    q_in = offs_q < N
    d_in = offs_d < D
    q = tl.load(Q + (b * N + offs_q)[:, None] * HD + h * D + offs_d[None, :], mask=q_in[:, None] & d_in[None, :],
                other=0.0)  # (BQ, BD)
    q_valid = tl.load(MASK + b * N + offs_q, mask=q_in, other=0)
    m_i = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_Q,), tl.float32)
    acc = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
    mid = buckets // 2
    for j0 in range(0, N, BLOCK_K):
        offs_k = j0 + tl.arange(0, BLOCK_K)
        k_in = offs_k < N
        kv_offsets = (b * N + offs_k)[:, None] * HD + h * D + offs_d[None, :]
        kv_mask = k_in[:, None] & d_in[None, :]
        k = tl.load(K + kv_offsets, mask=kv_mask, other=0.0)  # (BK, BD)
        v = tl.load(V + kv_offsets, mask=kv_mask, other=0.0)
        k_valid = tl.load(MASK + b * N + offs_k, mask=k_in, other=0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BQ, BK)
        rel = offs_q[:, None] - offs_k[None, :]
        if buckets > 0:  # Hugging Face's log bucket, float32
            abs_rel = tl.abs(rel)
            ratio = abs_rel.to(tl.float32) / mid
            log_pos = tl.ceil(tl.log(tl.maximum(ratio, 1.0)) / log_base * (mid - 1)).to(tl.int32) + mid
            rel = tl.where(abs_rel <= mid, rel, tl.where(rel < 0, -log_pos, log_pos))
        idx = tl.minimum(tl.maximum(rel + span, 0), 2 * span - 1)  # (BQ, BK)
        row = idx[:, :, None] * HD + h * D + offs_d[None, None, :]  # (BQ, BK, BD)
        pair_mask = q_in[:, None, None] & k_in[None, :, None] & d_in[None, None, :]
        if C2P:
            pk = tl.load(PK + row, mask=pair_mask, other=0.0)
            s += tl.sum(q[:, None, :] * pk, axis=2)
        if P2C:
            pq = tl.load(PQ + row, mask=pair_mask, other=0.0)
            s += tl.sum(k[None, :, :] * pq, axis=2)
        s = s * scale
        s = tl.where((q_valid[:, None] != 0) & (k_valid[None, :] != 0), s, -65504.0)
        s = tl.where(k_in[None, :], s, float("-inf"))  # keys past N do not exist
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / l_i[:, None]
    tl.store(OUT + (b * N + offs_q)[:, None] * HD + h * D + offs_d[None, :], out, mask=q_in[:, None] & d_in[None, :])


def triton_attention(q, k, v, pk, pq, mask, *, num_heads, scale, span, position_buckets, max_relative_positions,
                     c2p, p2c, block_q: int = 16, block_k: int = 32) -> torch.Tensor:
    """float32 (B, N, HD) context, same arguments as debx.model.disentangled_attention."""
    B, N, HD = q.shape
    D = HD // num_heads
    out = torch.empty_like(q)
    mid = position_buckets // 2 if position_buckets > 0 else 1
    log_base = float(np.log(np.float32((max_relative_positions - 1) / mid))) if position_buckets > 0 else 1.0
    block_d = max(16, triton.next_power_of_2(D))
    grid = (triton.cdiv(N, block_q), B * num_heads)
    _debx_attention_kernel[grid](q.contiguous(), k.contiguous(), v.contiguous(), pk.contiguous(), pq.contiguous(),
                                 mask.to(torch.int32).contiguous(), out, N, num_heads, HD, D, span,
                                 position_buckets, log_base, scale, C2P=bool(c2p), P2C=bool(p2c), BLOCK_Q=block_q,
                                 BLOCK_K=block_k, BLOCK_D=block_d)
    return out
