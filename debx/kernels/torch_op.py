"""`torch.ops.debx.disentangled_attention`: the fused Triton kernel as a PyTorch custom op (CUDA only).

Registered with `torch.library.custom_op` and a fake (meta) implementation, so `torch.compile` treats it as one opaque
node (no graph break) and `mode="reduce-overhead"` captures it in a CUDA graph. Forward only: the model uses it for
inference (no autograd, no dropout) and keeps the PyTorch math for training.
"""

from __future__ import annotations

import torch

from debx.kernels import attention_triton


@torch.library.custom_op("debx::disentangled_attention", mutates_args=(), device_types="cuda")
def disentangled_attention(
    query: torch.Tensor,  # (B, N, HD)
    key: torch.Tensor,  # (B, N, HD)
    value: torch.Tensor,  # (B, N, HD)
    pos_key: torch.Tensor,  # (P, HD)
    pos_query: torch.Tensor,  # (P, HD)
    mask: torch.Tensor,  # (B, N)
    table: torch.Tensor,  # (2L - 1,) saturated relative index, T[r + L - 1] = idx of distance r (clamped past L - 1)
    num_heads: int,
    scale: float,
    span: int,
    position_buckets: int,
    max_relative_positions: int,
    c2p: bool,
    p2c: bool,
) -> torch.Tensor:  # (B, N, HD)
    return attention_triton.attention(
        query, key, value, pos_key, pos_query, mask, num_heads=num_heads, scale=scale, span=span,
        position_buckets=position_buckets, max_relative_positions=max_relative_positions, c2p=c2p, p2c=p2c,
        table=table)


@disentangled_attention.register_fake
def _(query, key, value, pos_key, pos_query, mask, table, num_heads, scale, span, position_buckets, max_relative_positions,
      c2p, p2c):
    return query.new_empty(query.shape)


def usable(query: torch.Tensor) -> bool:
    """The fused op can run this call: CUDA tensors, Triton importable, no gradient wanted."""
    return (query.is_cuda and attention_triton.available()
            and not (torch.is_grad_enabled() and query.requires_grad))

