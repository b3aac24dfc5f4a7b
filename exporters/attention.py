"""How each `--attention` mode is emitted into the ONNX graph. The one place that decides what a layer's attention
looks like in an exported file (the Speed issue optimises these functions).

Every emission has the signature of `debx.model.attention_core` and is set, by `debx.exporters.export.export_patches`,
as the attention core of one model's attention modules (their `core` attribute) for the length of an export:

    emit(attn, q, k, v, pk, pq, mask, index) -> context (B, N, HD)

  q, k, v (B, N, HD) projected (and gated), pk/pq (P, HD) position tables (folded constants at export),
  mask (B, N) int 1 = token, index (N, N) relative slot index computed in-graph from the sequence length.

Modes:
  onnx  standard ONNX ops only (runs anywhere)
  trt   c2c/c2p/p2c matmuls in standard ops, then one `DisentangledAttention_TRT` node (TensorRT's own plugin) for
        the gathered, summed and scaled scores, then mask, softmax and the value product in standard ops
  debx  one `debx::DebxDisentangledAttention` node per layer (whole attention; contract in
        plugins/disentangledAttention/README.md)
  fast  standard ONNX ops only, like `onnx`, but relative positions handled by distance (exporters/fastpath.py):
        no Expand/Tile or element-wise gathers, much faster on ONNX Runtime CPU, same math
"""

from __future__ import annotations

from typing import Callable

import torch

from debx.errors import ConfigError
from debx.model import MASK_FILL, DebertaConfig, DisentangledSelfAttention, disentangled_attention
from debx.contract import DEBX_ATTENTION, TRT_ATTENTION
from debx.runtimes.reference_ops import debx_attention_reference, trt_disentangled_reference
from debx.exporters.fastpath import FastEmission, emit_fast

MODES = ("onnx", "trt", "debx", "fast")


# ---------------------------------------------------------------------------------------------------------------------
# Which variant each mode can represent
# ---------------------------------------------------------------------------------------------------------------------


def unsupported_reason(mode: str, cfg: DebertaConfig) -> str | None:
    """Why `mode` cannot represent the model `cfg` describes, or None when it can."""
    if mode not in MODES:
        return f"unknown attention mode {mode!r} (choose one of {', '.join(MODES)})"
    if mode != "trt":
        return None
    pos = set(cfg.pos_att_type) if cfg.relative_attention else set()
    if cfg.is_v1:
        return ("TensorRT's DisentangledAttention_TRT plugin only implements log-bucket relative positions "
                "(DeBERTa v2/v3); this is a v1 model with linear positions: use --attention debx or onnx")
    if cfg.buckets <= 0:
        return ("TensorRT's DisentangledAttention_TRT plugin only implements log-bucket relative positions; "
                "this model has position_buckets <= 0 (linear positions): use --attention debx or onnx")
    if pos != {"c2p", "p2c"}:
        return (f"TensorRT's DisentangledAttention_TRT plugin needs both c2p and p2c attention; this model has "
                f"pos_att_type {sorted(pos)}: use --attention debx or onnx")
    if cfg.max_relative != 2 * cfg.span:
        return (f"TensorRT's DisentangledAttention_TRT plugin derives the log-bucket range from the table width "
                f"(max_relative_positions == 2 * position_buckets); this model has max_relative_positions "
                f"{cfg.max_relative} and {cfg.span} buckets: use --attention debx or onnx")
    return None


def supported_modes(cfg: DebertaConfig) -> tuple[str, ...]:
    return tuple(m for m in MODES if unsupported_reason(m, cfg) is None)


def check_supported(mode: str, cfg: DebertaConfig) -> None:
    reason = unsupported_reason(mode, cfg)
    if reason is not None:
        raise ConfigError(f"--attention {mode}: {reason}" if mode in MODES else reason)


# ---------------------------------------------------------------------------------------------------------------------
# Standard ops
# ---------------------------------------------------------------------------------------------------------------------


def emit_onnx(attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index):
    """The math of debx.model.disentangled_attention in standard ops, with the scale applied *before* the products.

    Scaling the query (one Mul on (B, N, HD)) and the constant p2c table (folded into the initializer) keeps every
    score intermediate at its final magnitude: no FP16 overflow from the unscaled sum. Everything else is the model's
    own function, so the PyTorch reference and this graph cannot drift apart.
    """
    s = attn.scale
    return disentangled_attention(
        q * s, k, v, pk, pq * s, mask, num_heads=attn.num_heads, scale=1.0, span=attn.cfg.span,
        position_buckets=attn.cfg.buckets, max_relative_positions=attn.cfg.max_relative, c2p=attn.c2p, p2c=attn.p2c,
        index=index,
    )


# ---------------------------------------------------------------------------------------------------------------------
# TensorRT's DisentangledAttention_TRT
# ---------------------------------------------------------------------------------------------------------------------


class _TrtScores(torch.autograd.Function):
    """(c2c, c2p, p2c) -> scaled scores (BH, N, N); traced as one DisentangledAttention_TRT node."""

    @staticmethod
    def forward(ctx, c2c, c2p, p2c, span: int, factor: float):
        out = trt_disentangled_reference(c2c.detach().float().numpy(), c2p.detach().float().numpy(),
                                         p2c.detach().float().numpy(), span=span, factor=factor)
        return torch.from_numpy(out).to(c2c.dtype)

    @staticmethod
    def symbolic(g, c2c, c2p, p2c, span: int, factor: float):
        # TorchScript puts un-namespaced ops in the ONNX default domain "", where TensorRT's parser looks plugins up
        out = g.op(TRT_ATTENTION.qualified_name, c2c, c2p, p2c,
                   **TRT_ATTENTION.symbolic_attributes(span=span, factor=factor),
                   plugin_version_s=TRT_ATTENTION.plugin_version, plugin_namespace_s="")  # the parser's lookup keys
        out.setType(c2c.type())
        return out


def emit_trt(attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index):
    B, N, HD = q.shape
    H, P = attn.num_heads, pk.shape[0]
    D = HD // H
    qh = q.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    kh = k.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    vh = v.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    c2c = (qh @ kh.transpose(-1, -2)).reshape(B * H, N, N)  # (BH, N, N)
    c2p = (qh @ pk.view(P, H, D).permute(1, 2, 0)).reshape(B * H, N, P)  # (BH, N, 2k): q_i . pk[r]
    p2c = (kh @ pq.view(P, H, D).permute(1, 2, 0)).reshape(B * H, N, P)  # (BH, N, 2k): k_j . pq[r]
    scores = _TrtScores.apply(c2c, c2p, p2c, attn.cfg.span, float(attn.scale)).view(B, H, N, N)
    keep = mask.to(torch.bool)
    keep = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, N, N)
    scores = torch.where(keep, scores, torch.tensor(MASK_FILL, dtype=scores.dtype))
    probs = torch.softmax(scores, dim=-1)  # (B, H, N, N)
    return (probs @ vh).transpose(1, 2).reshape(B, N, HD)


# ---------------------------------------------------------------------------------------------------------------------
# debx::DebxDisentangledAttention
# ---------------------------------------------------------------------------------------------------------------------


class _DebxAttention(torch.autograd.Function):
    """The whole attention of a layer; traced as one debx::DebxDisentangledAttention node (attributes per its contract)."""

    @staticmethod
    def forward(ctx, q, k, v, pk, pq, mask, num_heads, scale, span, position_buckets, max_relative_positions, c2p, p2c):
        args = (t.detach().float().numpy() for t in (q, k, v, pk, pq))
        out = debx_attention_reference(*args, mask.numpy(), num_heads=num_heads, scale=scale, span=span,
                                       position_buckets=position_buckets, max_relative_positions=max_relative_positions,
                                       c2p=c2p, p2c=p2c)
        return torch.from_numpy(out).to(q.dtype)

    @staticmethod
    def symbolic(g, q, k, v, pk, pq, mask, num_heads, scale, span, position_buckets, max_relative_positions, c2p, p2c):
        out = g.op(DEBX_ATTENTION.qualified_name, q, k, v, pk, pq, mask,
                   **DEBX_ATTENTION.symbolic_attributes(
                       num_heads=num_heads, scale=scale, span=span, position_buckets=position_buckets,
                       max_relative_positions=max_relative_positions, c2p=c2p, p2c=p2c))
        out.setType(q.type())
        return out


def emit_debx(attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index):
    cfg = attn.cfg
    HD = q.shape[-1]
    if not (attn.c2p and attn.p2c):  # contract: an unused table is still an input, (P >= 1, HD)
        pk = pk if attn.c2p else pk.new_zeros(1, HD)
        pq = pq if attn.p2c else pq.new_zeros(1, HD)
    return _DebxAttention.apply(q, k, v, pk, pq, mask.to(torch.int32), attn.num_heads, float(attn.scale), cfg.span,
                                cfg.buckets, cfg.max_relative, int(attn.c2p), int(attn.p2c))


EMITTERS: dict[str, Callable] = {"onnx": emit_onnx, "trt": emit_trt, "debx": emit_debx, "fast": emit_fast}


def emitter(mode: str) -> Callable:
    """The emission of `mode` for one export (a fresh one: the fast emission keeps its per-trace plan in itself)."""
    if mode not in EMITTERS:
        raise ConfigError(f"unknown attention mode {mode!r} (choose one of {', '.join(MODES)})")
    return FastEmission() if mode == "fast" else EMITTERS[mode]
