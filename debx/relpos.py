"""Relative positions of disentangled attention: the bucket/clamp math that maps a distance i - j to a row of the
position tables. One definition for the model (debx.model), the GPU kernels (debx.kernels) and, through them, every
graph and op; it imports nothing of debx but its errors, so the model and the kernels both stand on it.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from debx.errors import ConfigError


def log_bucket(relative_pos: torch.Tensor, buckets: int, max_position: int) -> torch.Tensor:
    """DeBERTa-v2 log-bucket positions: exact for |r| < buckets/2, logarithmic beyond (float32 math, as the reference)."""
    sign = torch.sign(relative_pos)
    mid = buckets // 2
    abs_pos = torch.where((relative_pos < mid) & (relative_pos > -mid), torch.tensor(mid - 1).type_as(relative_pos),
                          torch.abs(relative_pos))
    log_pos = torch.ceil(torch.log(abs_pos / mid) / torch.log(torch.tensor((max_position - 1) / mid)) * (mid - 1)) + mid
    return torch.where(abs_pos <= mid, relative_pos.type_as(log_pos), log_pos * sign).to(torch.long)


def relative_index_table(max_len: int, span: int, buckets: int, max_relative: int, device=None) -> torch.Tensor:
    """T[r + max_len - 1] = clamp(bucket(r) + span, 0, 2*span - 1) for r = i - j in [-(max_len-1), max_len-1]."""
    r = torch.arange(-(max_len - 1), max_len, dtype=torch.long, device=device)  # (2L-1,)
    if buckets > 0:
        r = log_bucket(r, buckets, max_relative)
    return torch.clamp(r + span, 0, 2 * span - 1)


@lru_cache(maxsize=64)  # pure function of three ints; every attention layer asks
def relative_index_reach(span: int, buckets: int, max_relative: int) -> int:
    """The table length L at which the slot stops changing: every distance |r| >= L - 1 uses the slot of +-(L - 1).

    The slot is monotone in r and clamped to [0, 2*span - 1], so past a finite distance it is constant (linear: r >=
    span - 1 and r <= -span; log buckets: |r| >= max_relative - 1 or so). A table of that length plus a clamp of the
    distance therefore gives the exact index for *any* sequence length. Found by computing, not by formula, so the
    float32 log-bucket rounding is the table's own.
    """
    if buckets <= 0:
        return span + 1
    length, cap = max(span, max_relative) + 2, 4 * max(span, max_relative) + 64
    while True:
        t = relative_index_table(length, span, buckets, max_relative)
        if int(t[0]) == 0 and int(t[-1]) == 2 * span - 1 and bool((t[1:] >= t[:-1]).all()):
            return length
        if length >= cap:
            raise ConfigError(f"log-bucket relative positions (position_buckets {buckets}, max_relative_positions "
                              f"{max_relative}) never reach the ends of the {2 * span}-slot table")
        length = min(2 * length, cap)


def relative_index(table: torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """(N, N) index into the (P, HD) position tables for a sequence of length n, any n: the distance i - j is clamped
    to the table's reach (past which the slot no longer changes), then one Gather. No If/Loop in ONNX; exact as long
    as `table` is at least `relative_index_reach` long (or at least n long)."""
    max_len = (table.shape[0] + 1) // 2
    ar = torch.arange(n, device=table.device)  # (N,)
    dist = torch.clamp(ar[:, None] - ar[None, :], -(max_len - 1), max_len - 1)  # (N, N) i - j, clamped
    return table[dist + (max_len - 1)]  # (N, N)
