"""Fused disentangled attention on NVIDIA tensor cores: one Triton kernel, FlashAttention-2 structure.

The op is the one `--attention debx` exports (debx::DebxDisentangledAttention) and `debx.model.disentangled_attention`
computes:
    s[i, j] = (q_i . k_j + c2p * q_i . pos_key[idx(i, j)] + p2c * k_j . pos_query[idx(i, j)]) * scale
    s[i, j] = -65504 where mask[b, i] == 0 or mask[b, j] == 0;   out_i = sum_j softmax_j(s[i, :]) v_j
with idx(i, j) = T[i - j + N - 1] and T = debx.relpos.relative_index_table(N, ...): the bucket/clamp math has one
source of truth, the PyTorch function, evaluated once per (N, attributes) on the CPU and cached on the device.

Two steps, no (N, N) tensor anywhere:
  1. the relative terms' products on tensor cores, against only the position-table rows [lo, hi] that a length-N
     input reads (R = hi - lo + 1 <= min(2k, 2N - 1) rows): C2P = pos_key[lo:hi] Q^T and P2C = pos_query[lo:hi] K^T,
     (H, R, B*N) each, one strided batched cuBLAS product apiece on views (no copies). O(N R), not O(N^2): 2 x 100 MB
     at 4 x 2048 (v3-base, FP16). Position-major, so a gather into the score tile reads consecutive positions;
  2. the flash kernel. Per program: one (batch, head) and a tile of BLOCK_Q queries, walking key tiles of BLOCK_K
     (Triton pipelines the K/V loads through shared memory with asynchronous copies, `num_stages` deep):
     S = Q K^T on tensor cores (FP32 accumulation); + C2P[i, T(i - j)] + P2C[j, T(i - j)], gathered from the band
     products (a tile reads a BLOCK_Q x (BLOCK_Q + BLOCK_K) window of each: L1/L2 resident); padding mask; online
     softmax in FP32 (base 2, the scale folded into one multiply); P V on tensor cores.
Any N: T is built for the actual N. FP16 and BF16 run on tensor cores; FP32 inputs take IEEE products (exact path).

Measured alternative (kept out): computing the band products per tile inside the kernel (query tile x pos_key band,
key tile x pos_query band) and gathering them with tl.gather was 2-4x slower on an H100: Triton lowers a
register-level gather over a 128-column band to per-element selects. See plugins/disentangledAttention/README.md.
"""

from __future__ import annotations

from functools import lru_cache

import torch

try:  # Triton is optional: the CPU build of debx never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised where triton is missing
    triton = None
    tl = None

LOG2E = 1.4426950408889634
MASK_FILL = -65504.0  # same as debx.model.MASK_FILL (lowest finite FP16)


def available() -> bool:
    """Triton is importable (a GPU or TRITON_INTERPRET=1 is still needed to run the kernel)."""
    return triton is not None


if triton is not None:
    _MASKED_LOGIT = tl.constexpr(MASK_FILL * LOG2E)  # the masked score in the base-2 domain

    @triton.jit
    def _debx_attention_fwd(
        Q, K, V, C2P, P2C, MASK, TABLE, OUT,
        N, H, R, lo, half, qk_scale,
        stride_qb, stride_qn, stride_kb, stride_kn, stride_vb, stride_vn, stride_ob, stride_on, stride_mb, stride_g,
        D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr,
        USE_C2P: tl.constexpr, USE_P2C: tl.constexpr, IEEE: tl.constexpr,
    ):
        pid_q = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        h_off = h * D
        i0 = pid_q * BLOCK_Q
        offs_q = i0 + tl.arange(0, BLOCK_Q)
        offs_d = tl.arange(0, BLOCK_D)
        d_in = offs_d < D
        q_in = offs_q < N
        q = tl.load(Q + b * stride_qb + offs_q[:, None] * stride_qn + h_off + offs_d[None, :],
                    mask=q_in[:, None] & d_in[None, :], other=0.0)  # (BQ, BD)
        q_keep = tl.load(MASK + b * stride_mb + offs_q, mask=q_in, other=0) != 0  # (BQ,)
        rel_base = (h.to(tl.int64) * R) * stride_g + b * N  # (b, h)'s slice of the (H, R, B*N) products
        m_i = tl.full((BLOCK_Q,), float("-inf"), tl.float32)
        l_i = tl.zeros((BLOCK_Q,), tl.float32)
        acc = tl.zeros((BLOCK_Q, BLOCK_D), tl.float32)
        # T has 2 * half + 1 entries, T[r + half] for r in [-half, half], and saturates at its ends: distances past
        # half are clamped to it (exact for any N, see debx.model.relative_index_reach)
        for j0 in range(0, N, BLOCK_K):
            offs_k = j0 + tl.arange(0, BLOCK_K)
            k_in = offs_k < N
            kv_mask = k_in[:, None] & d_in[None, :]
            k = tl.load(K + b * stride_kb + offs_k[:, None] * stride_kn + h_off + offs_d[None, :], mask=kv_mask,
                        other=0.0)  # (BK, BD)
            v = tl.load(V + b * stride_vb + offs_k[:, None] * stride_vn + h_off + offs_d[None, :], mask=kv_mask,
                        other=0.0)  # (BK, BD)
            k_keep = tl.load(MASK + b * stride_mb + offs_k, mask=k_in, other=0) != 0  # (BK,)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")  # (BQ, BK) fp32
            else:
                s = tl.dot(q, tl.trans(k))
            if USE_C2P or USE_P2C:
                pair = q_in[:, None] & k_in[None, :]
                rel = tl.minimum(tl.maximum(offs_q[:, None] - offs_k[None, :], -half), half) + half
                g = tl.load(TABLE + rel).to(tl.int32) - lo  # (BQ, BK) column of the band products; L1-resident
                # rows g of the (R, N) products: a warp's 8 query rows x 4 key columns read few distinct g, and
                # consecutive positions of each, so a gather touches one or two cache lines, not eight
                if USE_C2P:  # c2p[i, j] = (q_i . pos_key[idx(i, j)]) = C2P[h, g, b*N + i]
                    s += tl.load(C2P + rel_base + g * stride_g + offs_q[:, None], mask=pair, other=0.0).to(tl.float32)
                if USE_P2C:  # p2c[i, j] = (k_j . pos_query[idx(i, j)]) = P2C[h, g, b*N + j]
                    s += tl.load(P2C + rel_base + g * stride_g + offs_k[None, :], mask=pair, other=0.0).to(tl.float32)
            keep = q_keep[:, None] & k_keep[None, :]
            s = tl.where(keep, s * qk_scale, _MASKED_LOGIT)  # base-2 logits
            s = tl.where(k_in[None, :], s, float("-inf"))  # keys past N do not exist
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, axis=1)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(OUT + b * stride_ob + offs_q[:, None] * stride_on + h_off + offs_d[None, :],
                 out.to(OUT.dtype.element_ty), mask=q_in[:, None] & d_in[None, :])


if triton is not None:

    @triton.jit
    def _band_products_fwd(X, POS, OUT, BN, R, lo, stride_x, stride_p, D: tl.constexpr, BLOCK_D: tl.constexpr,
                           BLOCK_R: tl.constexpr, BLOCK_T: tl.constexpr):
        """OUT[h, r, t] = POS[lo + r, h*D:(h+1)*D] . X[t, h*D:(h+1)*D]: the band products as one tensor-core kernel
        (the TensorRT plugin's; PyTorch uses cuBLAS through torch.bmm for the same (H, R, B*N) result)."""
        pid_r = tl.program_id(0)
        pid_t = tl.program_id(1)
        h = tl.program_id(2)
        offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
        offs_d = tl.arange(0, BLOCK_D)
        d_in = offs_d < D
        r_in = offs_r < R
        t_in = offs_t < BN
        pos = tl.load(POS + (lo + offs_r)[:, None] * stride_p + h * D + offs_d[None, :],
                      mask=r_in[:, None] & d_in[None, :], other=0.0)  # (BR, BD)
        x = tl.load(X + offs_t[:, None] * stride_x + h * D + offs_d[None, :], mask=t_in[:, None] & d_in[None, :],
                    other=0.0)  # (BT, BD)
        acc = tl.dot(pos, tl.trans(x))  # (BR, BT) fp32
        rows = (h * R + offs_r).to(tl.int64) * BN
        tl.store(OUT + rows[:, None] + offs_t[None, :], acc.to(OUT.dtype.element_ty),
                 mask=r_in[:, None] & t_in[None, :])


def band_products_triton(x: torch.Tensor, table: torch.Tensor, num_heads: int, lo: int = 0,
                         rows: int | None = None) -> torch.Tensor:
    """band_products(x, table[lo:lo + rows], num_heads) through the Triton kernel the TensorRT plugin embeds."""
    B, N, HD = x.shape
    D = HD // num_heads
    R = table.shape[0] - lo if rows is None else rows
    xs = x.reshape(B * N, HD)
    out = torch.empty((num_heads, R, B * N), dtype=x.dtype, device=x.device)
    grid = (triton.cdiv(R, 64), triton.cdiv(B * N, 64), num_heads)
    _band_products_fwd[grid](xs, table, out, B * N, R, lo, xs.stride(0), table.stride(0), D=D,
                             BLOCK_D=max(16, triton.next_power_of_2(D)), BLOCK_R=64, BLOCK_T=64, num_warps=4)
    return out


@lru_cache(maxsize=256)
def table_rows(n: int, span: int, buckets: int, max_relative: int) -> tuple[int, int]:
    """(lo, hi): the only position-table rows a length-n input reads (host ints; no device memory is cached)."""
    from debx.relpos import relative_index_table  # the one definition of the bucket/clamp math

    table = relative_index_table(n, span, buckets, max_relative)  # (2N - 1,), monotone in r
    return int(table.min()), int(table.max())


def relative_table(n: int, span: int, buckets: int, max_relative: int, device) -> torch.Tensor:
    """T for length n on `device`: T[r + n - 1] = idx of relative distance r (exact for inputs up to n tokens)."""
    from debx.relpos import relative_index_table

    return relative_index_table(n, span, buckets, max_relative).to(device=device, dtype=torch.int32)


def band_products(x: torch.Tensor, table: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(H, R, B*N) = table_h @ x_h^T per head: one strided batched tensor-core product (cuBLAS), no copies (both
    operands are views with a unit stride), over only the R table rows in use; position-major, so the kernel's gathers
    read along the sequence. Element [h, r, b*N + i] is row r of the table against position i of batch b."""
    B, N, HD = x.shape
    D = HD // num_heads
    xt = x.reshape(B * N, num_heads, D).permute(1, 2, 0)  # (H, D, B*N), strides (D, 1, HD)
    th = table.reshape(-1, num_heads, D).transpose(0, 1)  # (H, R, D), strides (D, HD, 1)
    return torch.bmm(th, xt)  # (H, R, B*N), contiguous


def pick_config(n: int, head_size: int, dtype: torch.dtype) -> dict:
    """Tile shape, warps and pipeline depth (measured on an H100: README, "On NVIDIA GPUs")."""
    if dtype == torch.float32:
        return dict(block_q=32, block_k=32, num_warps=4, num_stages=1)
    # H100, v3-base, FP16: 64 x 32 tiles won or tied at every shape from 1 x 128 to 4 x 2048; a third pipeline stage
    # pays off once there are many key tiles (4 x 2048: 0.99 vs 1.14 ms)
    return dict(block_q=64, block_k=32, num_warps=4, num_stages=3 if n >= 1024 else 2)


def attention(query, key, value, pos_key, pos_query, mask, *, num_heads: int, scale: float, span: int,
              position_buckets: int, max_relative_positions: int, c2p: bool = True, p2c: bool = True,
              block_q: int | None = None, block_k: int | None = None, num_warps: int | None = None,
              num_stages: int | None = None, table: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N, HD) context; same arguments and result as debx.model.disentangled_attention (inference: no dropout).

    table: (2L - 1,) integer relative index T on the inputs' device, T[r + L - 1] = idx of distance r, saturated at its
    ends (any L >= debx.model.relative_index_reach(...) or >= N): the model's own buffer. Distances past L - 1 are
    clamped to it, as debx.model.relative_index does. Built for L = N when None. Passing it keeps the call free of
    host-to-device copies (CUDA graphs) and of any (N, N) index.
    """
    if triton is None:
        raise RuntimeError("the fused CUDA attention needs Triton (pip install triton)")
    B, N, HD = query.shape
    if HD % num_heads:
        raise ValueError(f"hidden size {HD} is not a multiple of {num_heads} heads")
    D = HD // num_heads
    if D > 256:
        raise ValueError(f"head size {D} > 256 is not supported by the fused kernel")
    cfg = pick_config(N, D, query.dtype)
    bq = block_q or cfg["block_q"]
    bk = block_k or cfg["block_k"]
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value))
    out = torch.empty((B, N, HD), dtype=query.dtype, device=query.device)
    if N == 0 or B == 0:
        return out
    if c2p or p2c:
        P = 2 * span
        for name, t, used in (("pos_key", pos_key, c2p), ("pos_query", pos_query, p2c)):
            if used and tuple(t.shape) != (P, HD):
                raise ValueError(f"{name} must be (2*span, HD) = ({P}, {HD}), got {tuple(t.shape)}")
        if table is None:
            table = relative_table(N, span, position_buckets, max_relative_positions, query.device)
        elif table.dim() != 1 or table.numel() % 2 == 0:
            raise ValueError(f"relative table must be 1-D with 2L - 1 entries, got {tuple(table.shape)}")
        lo, hi = table_rows(N, span, position_buckets, max_relative_positions)
        c2p_rows = band_products(q, pos_key[lo:hi + 1], num_heads) if c2p else None  # (H, R, B*N)
        p2c_rows = band_products(k, pos_query[lo:hi + 1], num_heads) if p2c else None  # (H, R, B*N)
        R = hi - lo + 1
    else:
        table, lo, R, c2p_rows, p2c_rows = mask, 0, 1, None, None
    half = (table.numel() - 1) // 2 if (c2p or p2c) else 0
    c2p_rows = c2p_rows if c2p_rows is not None else (p2c_rows if p2c_rows is not None else q)  # unused pointer
    p2c_rows = p2c_rows if p2c_rows is not None else c2p_rows
    m = mask if mask.stride(-1) == 1 else mask.contiguous()
    block_d = max(16, triton.next_power_of_2(D))
    grid = (triton.cdiv(N, bq), B * num_heads)
    _debx_attention_fwd[grid](
        q, k, v, c2p_rows, p2c_rows, m, table, out,
        N, num_heads, R, lo, half, float(scale) * LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        m.stride(0), B * N,
        D=D, BLOCK_D=block_d, BLOCK_Q=bq, BLOCK_K=bk, USE_C2P=bool(c2p), USE_P2C=bool(p2c),
        IEEE=query.dtype == torch.float32,
        num_warps=num_warps or cfg["num_warps"], num_stages=num_stages or cfg["num_stages"],
    )
    return out


def flops(batch: int, seq: int, num_heads: int, head_size: int, c2p: bool = True, p2c: bool = True) -> float:
    """Useful floating-point work of the op (QK^T, P V and the two relative products over 2N rows), for reports."""
    pairs = batch * num_heads * seq * seq
    return 2.0 * pairs * head_size * (2 + int(c2p) + int(p2c))


__all__ = ["attention", "available", "band_products", "band_products_triton", "relative_table", "table_rows", "pick_config", "flops", "LOG2E", "MASK_FILL"]
