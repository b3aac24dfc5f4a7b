"""The DeBERTa family in one readable file: v1, v2, v3, mDeBERTa and the gate-with-inhibition (giMLP) variant.

Parameter names follow the Hugging Face checkpoints exactly, so a `model.safetensors` loads with no renaming.
Everything here is written for export from the start:
  * no data-dependent Python control flow on tensor values, no torch.jit.script, no uint8 masks;
  * relative positions come from the sequence length through a precomputed index table (one Gather in ONNX);
  * masked scores are filled with -65504 (the lowest finite FP16 value) through `where`, never added: FP16-safe;
  * the disentangled attention core is one pure function (`disentangled_attention`) that the exporter can replace
    by a single custom node, and whose semantics the ONNX Runtime reference and the TensorRT plugin implement.

Shapes in comments: B batch, N sequence length, C hidden size, H heads, D head size (HD = H * D), P = 2 * span
relative-position slots.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from debx.errors import ConfigError

# the relative-position math lives below the model and the kernels (re-exported here: debx.model.relative_index etc.)
from debx.relpos import log_bucket, relative_index, relative_index_reach, relative_index_table  # noqa: F401

MASK_FILL = -65504.0  # lowest finite float16: safe in FP32, FP16 and BF16 graphs
GI_MAX_SCOPES = ("batch", "example")  # giMLP threshold: max over the whole batch (reference code) or per example


# ---------------------------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class DebertaConfig:
    """Model shape and variant switches. Defaults are DeBERTa-v3-base; key names are those of Hugging Face configs."""

    model_type: str = "deberta-v2"  # "deberta" (v1: in_proj + q/v bias, linear positions) | "deberta-v2" (v2, v3, mDeBERTa)
    vocab_size: int = 128100
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512  # absolute position table; a length limit only with position_biased_input
    type_vocab_size: int = 0  # 0: no segment embeddings (v3); 2: token_type_ids are an input
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-7
    embedding_size: int | None = None  # None: same as hidden_size; otherwise an embed_proj maps it to hidden_size
    pad_token_id: int = 0
    position_biased_input: bool = False  # absolute position embeddings added to the input (v1: True, v3: False)
    relative_attention: bool = True  # disentangled relative-position attention
    max_relative_positions: int = -1  # < 1: use max_position_embeddings
    position_buckets: int = 256  # > 0: log-bucket relative positions (v2/v3); <= 0: linear
    pos_att_type: tuple[str, ...] = ("p2c", "c2p")
    share_att_key: bool = True  # v3: position projections reuse query_proj/key_proj
    norm_rel_ebd: str = "layer_norm"  # "layer_norm": LayerNorm on the relative embeddings (v2/v3)
    conv_kernel_size: int = 0  # > 0: the nGiE convolution after the first layer (v2-xlarge/xxlarge)
    conv_groups: int = 1
    conv_act: str = "tanh"
    pooler_hidden_size: int | None = None  # None: hidden_size
    pooler_dropout: float = 0.0
    pooler_hidden_act: str = "gelu"
    cls_dropout: float | None = None  # classifier dropout; None: hidden_dropout_prob
    num_labels: int = 2
    problem_type: str | None = None  # "regression" | "single_label_classification" | None (inferred from num_labels)
    id2label: dict[int, str] = field(default_factory=dict)
    legacy: bool = True  # MLM head layout: legacy `cls.predictions` (True) or `lm_predictions.lm_head` (False)
    # gate with inhibition (giMLP); off unless a side is enabled and gi_layer_num > 0
    gi_key_side: bool = False
    gi_query_side: bool = False
    inhibition_level: float = 0.0
    gi_layer_num: int = 0
    gi_layers: tuple[int, ...] | None = None  # explicit 0-based gated layers (read from a checkpoint); None: the last gi_layer_num
    gi_max_scope: str = "batch"  # "batch": threshold = level * max over the whole batch, as the reference code does;
    # "example": per example (outputs independent of batching). Export/eval flag --gi-max-scope overrides it

    def __post_init__(self) -> None:
        if isinstance(self.pos_att_type, str):
            self.pos_att_type = tuple(x.strip() for x in self.pos_att_type.lower().split("|") if x.strip())
        self.pos_att_type = tuple(self.pos_att_type or ())
        self.validate()
        self.id2label = {int(k): str(v) for k, v in (self.id2label or {}).items()}
        if self.gi_layers is not None:
            self.gi_layers = tuple(int(i) for i in self.gi_layers)

    def validate(self) -> None:
        """Every value the model's shapes and switches depend on, checked before anything is allocated: one
        ConfigError naming the key and what it must be (a config.json typo or an absurd size is a user error)."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        def integer(v) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        need(self.model_type in ("deberta", "deberta-v2"),
             f"unsupported model_type {self.model_type!r}: expected 'deberta' or 'deberta-v2'")
        for key, low in (("vocab_size", 1), ("hidden_size", 1), ("num_hidden_layers", 1), ("num_attention_heads", 1),
                         ("intermediate_size", 1), ("max_position_embeddings", 1), ("type_vocab_size", 0),
                         ("num_labels", 1), ("conv_kernel_size", 0), ("conv_groups", 1), ("gi_layer_num", 0),
                         ("max_relative_positions", None), ("position_buckets", None)):
            v = getattr(self, key)
            need(integer(v) and (low is None or v >= low),
                 f"{key} must be an integer{f' >= {low}' if low is not None else ''}, got {v!r}")
        for key in ("embedding_size", "pooler_hidden_size"):
            v = getattr(self, key)
            need(v is None or (integer(v) and v >= 1), f"{key} must be an integer >= 1 (or absent), got {v!r}")
        need(self.hidden_size % self.num_attention_heads == 0,
             f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")
        need(self.pad_token_id is None or (integer(self.pad_token_id) and 0 <= self.pad_token_id < self.vocab_size),
             f"pad_token_id must be an integer in [0, vocab_size {self.vocab_size}), got {self.pad_token_id!r}")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob", "pooler_dropout", "cls_dropout"):
            v = getattr(self, key)
            need(v is None and key == "cls_dropout" or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                                         and 0.0 <= v <= 1.0),
                 f"{key} must be a probability in [0, 1], got {v!r}")
        for key in ("layer_norm_eps", "initializer_range", "inhibition_level"):
            v = getattr(self, key)
            need(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
                 f"{key} must be a finite number >= 0, got {v!r}")
        for key in ("hidden_act", "pooler_hidden_act", "conv_act"):
            v = getattr(self, key)
            need(v in ACTIVATIONS, f"{key} {v!r} is not supported: choose one of {', '.join(ACTIVATIONS)}")
        need(self.gi_max_scope in GI_MAX_SCOPES,
             f"gi_max_scope {self.gi_max_scope!r} is not one of {', '.join(map(repr, GI_MAX_SCOPES))} "
             f"(batch: the giMLP threshold is the maximum over the whole batch, as the reference code; example: per "
             f"example, so a request's output does not depend on the others batched with it)")
        if self.gi_layers is not None:
            need(all(integer(i) and 0 <= i < self.num_hidden_layers for i in self.gi_layers),
                 f"gi_layers {list(self.gi_layers)} must be layer indices in [0, {self.num_hidden_layers})")
        if self.conv_kernel_size > 0 and not self.is_v1:
            need(self.hidden_size % self.conv_groups == 0,
                 f"hidden_size {self.hidden_size} is not a multiple of conv_groups {self.conv_groups}")
        if self.relative_attention and self.buckets > 0:
            need(self.max_relative - 1 > self.buckets // 2,
                 f"max_relative_positions {self.max_relative} must exceed position_buckets/2 + 1 "
                 f"({self.buckets // 2 + 1}) for log-bucket relative positions")

    # -- derived facts -------------------------------------------------------------------------------------------------
    @property
    def is_v1(self) -> bool:
        return self.model_type == "deberta"

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def max_relative(self) -> int:
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def buckets(self) -> int:
        """Log buckets in use (v2/v3), or 0 for linear relative positions (v1 ignores position_buckets)."""
        return 0 if self.is_v1 or self.position_buckets <= 0 else self.position_buckets

    @property
    def span(self) -> int:
        """k: the relative-position tables have 2k rows."""
        return self.buckets if self.buckets > 0 else self.max_relative

    @property
    def length_limit(self) -> int | None:
        """The longest sequence the model accepts: max_position_embeddings when absolute position embeddings are
        added to the input (position_biased_input), else None: relative positions have no length limit."""
        return self.max_position_embeddings if self.position_biased_input else None

    def check_length(self, n: int, what: str = "sequence length") -> None:
        """One clear error (not an IndexError deep in an embedding) for a length past the absolute position table."""
        limit = self.length_limit
        if limit is not None and n > limit:
            raise ConfigError(f"{what} {n} exceeds the model's limit of {limit} tokens (absolute position embeddings: "
                              f"max_position_embeddings {limit}, position_biased_input)")

    @property
    def is_regression(self) -> bool:
        return self.problem_type == "regression" or (self.problem_type is None and self.num_labels == 1)

    def gated_layers(self) -> tuple[int, ...]:
        if not (self.gi_key_side or self.gi_query_side):
            return ()
        if self.gi_layers is not None:
            return self.gi_layers
        n = max(0, min(self.gi_layer_num, self.num_hidden_layers))
        return tuple(range(self.num_hidden_layers - n, self.num_hidden_layers))

    def set_gi_max_scope(self, scope: str, flag: str = "--gi-max-scope") -> None:
        """Override the giMLP threshold scope (a choice of the deployment, not a weight): "batch" as the reference
        code (one request's output depends on the others batched with it) or "example"."""
        if scope not in GI_MAX_SCOPES:
            raise ConfigError(f"{flag} {scope!r}: choose one of {', '.join(GI_MAX_SCOPES)}")
        if not self.gated_layers():
            raise ConfigError(f"{flag} applies to gate-with-inhibition (giMLP) models only; this model has no gated "
                              "layers")
        self.gi_max_scope = scope

    # -- Hugging Face config.json ---------------------------------------------------------------------------------------
    @classmethod
    def from_hf_dict(cls, d: dict) -> "DebertaConfig":
        known = {f.name for f in fields(cls)}
        stray = sorted(k for k in d if k.startswith("gi_") and k not in known)
        if stray:  # a misspelt giMLP key would otherwise be ignored and the model silently behave otherwise
            raise ConfigError(f"unknown giMLP key{'s' if len(stray) > 1 else ''} {', '.join(stray)} (known: "
                              f"{', '.join(sorted(k for k in known if k.startswith('gi_')))}, inhibition_level)")
        kw = {k: v for k, v in d.items() if k in known}
        if "id2label" in d and "num_labels" not in d:
            kw["num_labels"] = len(d["id2label"])
        # fields whose Hugging Face default differs from our v3-base default must take HF's default when absent
        hf_defaults = {
            "relative_attention": False,
            "position_biased_input": True,
            "pos_att_type": (),
            "share_att_key": False,
            "norm_rel_ebd": "none",
            "position_buckets": -1,
            "layer_norm_eps": 1e-12,
        }
        for k, v in hf_defaults.items():
            kw.setdefault(k, v)
        if kw.get("pos_att_type") is None:
            kw["pos_att_type"] = ()
        return cls(**kw)

    def to_hf_dict(self) -> dict:
        d = asdict(self)
        d["pos_att_type"] = list(self.pos_att_type)
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        d["label2id"] = {v: k for k, v in self.id2label.items()}
        for k in ("gi_layers", "embedding_size", "pooler_hidden_size", "cls_dropout", "problem_type"):
            if d[k] is None:
                d.pop(k)
        if not (self.gi_key_side or self.gi_query_side):
            for k in ("gi_key_side", "gi_query_side", "inhibition_level", "gi_layer_num", "gi_layers", "gi_max_scope"):
                d.pop(k, None)
        if self.is_v1:  # keys that v1 configs do not have
            for k in ("position_buckets", "share_att_key", "norm_rel_ebd", "conv_kernel_size", "conv_groups", "conv_act"):
                d.pop(k, None)
        return d


# ---------------------------------------------------------------------------------------------------------------------
# The attention core (the op that `--attention debx` exports as one node)
# ---------------------------------------------------------------------------------------------------------------------


def disentangled_attention(
    query: torch.Tensor,  # (B, N, HD) projected, not scaled
    key: torch.Tensor,  # (B, N, HD)
    value: torch.Tensor,  # (B, N, HD)
    pos_key: torch.Tensor,  # (P, HD) relative embeddings through the key-side projection (c2p)
    pos_query: torch.Tensor,  # (P, HD) relative embeddings through the query-side projection (p2c)
    mask: torch.Tensor,  # (B, N) 1 = token, 0 = padding
    *,
    num_heads: int,
    scale: float,
    span: int,
    position_buckets: int,
    max_relative_positions: int,
    c2p: bool = True,
    p2c: bool = True,
    index: torch.Tensor | None = None,  # (N, N) precomputed relative index; computed from the attributes when None
    dropout_p: float = 0.0,
) -> torch.Tensor:  # (B, N, HD)
    """Disentangled self-attention: softmax(scale * (QK^T + c2p + p2c), masked) V. See plugins/ for the contract."""
    B, N, HD = query.shape
    H = num_heads
    D = HD // H
    q = query.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    k = key.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    v = value.view(B, N, H, D).transpose(1, 2)  # (B, H, N, D)
    scores = q @ k.transpose(-1, -2)  # (B, H, N, N)
    rel = None  # c2p + p2c, summed before they meet the content scores (the reference's order of additions)
    if c2p or p2c:
        if index is None:
            index = relative_index(relative_index_table(N, span, position_buckets, max_relative_positions,
                                                        device=query.device), N)
        idx = index.expand(B, H, N, N)  # (B, H, N, N)
    if c2p:
        pk = pos_key.view(-1, H, D).transpose(0, 1)  # (H, P, D)
        c2p_all = q @ pk.transpose(-1, -2)  # (B, H, N, P): query i against every relative slot
        rel = torch.gather(c2p_all, -1, idx)  # c2p[i, j] = q_i . pk[idx(i, j)]
    if p2c:
        pq = pos_query.view(-1, H, D).transpose(0, 1)  # (H, P, D)
        p2c_all = k @ pq.transpose(-1, -2)  # (B, H, N, P): key j against every relative slot
        p2c_ij = torch.gather(p2c_all, -1, idx.transpose(-1, -2)).transpose(-1, -2)  # p2c[i,j] = k_j . pq[idx(i,j)]
        rel = p2c_ij if rel is None else rel + p2c_ij
    if rel is not None:
        scores = scores + rel
    scores = scores * scale
    keep = mask.to(torch.bool)
    keep = keep[:, None, :, None] & keep[:, None, None, :]  # (B, 1, N, N) query and key both real tokens
    scores = torch.where(keep, scores, torch.tensor(MASK_FILL, dtype=scores.dtype, device=scores.device))
    probs = torch.softmax(scores, dim=-1)  # (B, H, N, N)
    if dropout_p > 0:
        probs = F.dropout(probs, dropout_p, training=True)
    context = probs @ v  # (B, H, N, D)
    return context.transpose(1, 2).reshape(B, N, HD)


# ---------------------------------------------------------------------------------------------------------------------
# Modules, small to large
# ---------------------------------------------------------------------------------------------------------------------


ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh, "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
               "gelu_fast": lambda x: F.gelu(x, approximate="tanh"), "gelu_python": F.gelu, "silu": F.silu,
               "swish": F.silu, "linear": lambda x: x}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}")
    return ACTIVATIONS[name]


class V1LayerNorm(nn.LayerNorm):
    """DeBERTa v1's LayerNorm: the same parameters, computed as (x - mean) / sqrt(var + eps) in float32 like the
    reference (bit-for-bit parity). Exported as a standard LayerNormalization (same math, fusable, FP16-keepable)."""

    def forward(self, x):
        if torch.onnx.is_in_onnx_export():
            return super().forward(x)
        dtype = x.dtype
        x = x.float()
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - mean) / torch.sqrt(var + self.eps)).to(dtype) + self.bias


def layer_norm(cfg: DebertaConfig, size: int) -> nn.LayerNorm:
    return (V1LayerNorm if cfg.is_v1 else nn.LayerNorm)(size, eps=cfg.layer_norm_eps)


class Embeddings(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        e = cfg.embedding_size or cfg.hidden_size
        self.word_embeddings = nn.Embedding(cfg.vocab_size, e, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, e) if cfg.position_biased_input else None
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, e) if cfg.type_vocab_size > 0 else None
        self.embed_proj = nn.Linear(e, cfg.hidden_size, bias=False) if e != cfg.hidden_size else None
        self.LayerNorm = layer_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.cfg = cfg

    def forward(self, input_ids, mask, token_type_ids=None):  # (B, N) ints -> (B, N, C)
        x = self.word_embeddings(input_ids)  # (B, N, E)
        if self.position_embeddings is not None:
            if not torch.jit.is_tracing():  # exports check the length they are asked for themselves
                self.cfg.check_length(input_ids.shape[1])
            x = x + self.position_embeddings(torch.arange(input_ids.shape[1], device=input_ids.device))[None]
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            x = x + self.token_type_embeddings(token_type_ids)
        if self.embed_proj is not None:
            x = self.embed_proj(x)  # (B, N, C)
        x = self.LayerNorm(x)
        x = x * mask.unsqueeze(-1).to(x.dtype)
        return self.dropout(x)


class DisentangledSelfAttention(nn.Module):
    # the attention op this module calls: None = debx.model.attention_core. Set per instance to run another on one
    # model only (the exporter sets its emission for the length of an export: debx.exporters.export.export_patches)
    core: Callable | None = None

    def __init__(self, cfg: DebertaConfig, layer_index: int = 0):
        super().__init__()
        C, HD = cfg.hidden_size, cfg.hidden_size
        self.cfg = cfg
        self.num_heads = cfg.num_attention_heads
        self.c2p = cfg.relative_attention and "c2p" in cfg.pos_att_type
        self.p2c = cfg.relative_attention and "p2c" in cfg.pos_att_type
        self.scale = 1.0 / math.sqrt(cfg.head_size * (1 + int("c2p" in cfg.pos_att_type) + int("p2c" in cfg.pos_att_type)))
        if cfg.is_v1:
            self.in_proj = nn.Linear(C, 3 * HD, bias=False)  # per head interleaved [q_h | k_h | v_h]
            self.q_bias = nn.Parameter(torch.zeros(HD))
            self.v_bias = nn.Parameter(torch.zeros(HD))
            if self.c2p:
                self.pos_proj = nn.Linear(C, HD, bias=False)
            if self.p2c:
                self.pos_q_proj = nn.Linear(C, HD)
        else:
            self.query_proj = nn.Linear(C, HD)
            self.key_proj = nn.Linear(C, HD)
            self.value_proj = nn.Linear(C, HD)
            if not cfg.share_att_key:
                if self.c2p:
                    self.pos_key_proj = nn.Linear(C, HD)
                if self.p2c:
                    self.pos_query_proj = nn.Linear(C, HD)
        gated = layer_index in cfg.gated_layers()
        if gated and cfg.gi_query_side:
            self.inhibition_q = nn.Linear(C, HD)
            self.select_q = nn.Linear(C, HD)
        if gated and cfg.gi_key_side:
            self.inhibition_k = nn.Linear(C, HD)
            self.select_k = nn.Linear(C, HD)
        self.pos_dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)
        self.fused_cuda = True  # inference on CUDA tensors runs torch.ops.debx.disentangled_attention (debx.kernels)
        if self.c2p or self.p2c:  # the fused op's index: the saturated table, any length through a clamp (tiny)
            reach = relative_index_reach(cfg.span, cfg.buckets, cfg.max_relative)
            table = relative_index_table(reach, cfg.span, cfg.buckets, cfg.max_relative)
            self.register_buffer("rel_index_table", table, persistent=False)  # (2L - 1,)

    def gate(self, side: str, x):  # giMLP gate for "q" or "k", or None
        inhibition = getattr(self, f"inhibition_{side}", None)
        if inhibition is None:
            return None
        s = getattr(self, f"select_{side}")(F.gelu(inhibition(x)))  # (B, N, HD)
        peak = s.amax() if self.cfg.gi_max_scope == "batch" else s.amax(dim=(1, 2), keepdim=True)
        return F.gelu(s - self.cfg.inhibition_level * peak) + 1

    def project(self, x):  # (B, N, C) -> 3 x (B, N, HD)
        if self.cfg.is_v1:
            B, N, _ = x.shape
            qkv = self.in_proj(x).view(B, N, self.num_heads, 3, -1)  # (B, N, H, 3, D)
            q, k, v = (qkv[:, :, :, i].reshape(B, N, -1) for i in range(3))
            q, v = q + self.q_bias, v + self.v_bias
        else:
            q, k, v = self.query_proj(x), self.key_proj(x), self.value_proj(x)
        gq, gk = self.gate("q", x), self.gate("k", x)
        if gq is not None:
            q = q * gq
        if gk is not None:
            k = k * gk
        return q, k, v

    def position_tables(self, rel_embeddings):  # (P, C) -> 2 x (P, HD); input-independent: folded at export
        if self.cfg.is_v1:
            pk = self.pos_proj(rel_embeddings) if self.c2p else rel_embeddings[:, :0]
            pq = self.pos_q_proj(rel_embeddings) if self.p2c else rel_embeddings[:, :0]
        elif self.cfg.share_att_key:
            pk, pq = self.key_proj(rel_embeddings), self.query_proj(rel_embeddings)
        else:
            pk = self.pos_key_proj(rel_embeddings) if self.c2p else rel_embeddings[:, :0]
            pq = self.pos_query_proj(rel_embeddings) if self.p2c else rel_embeddings[:, :0]
        return pk, pq

    def forward(self, x, mask, rel_embeddings, index):  # (B, N, C) -> (B, N, HD)
        q, k, v = self.project(x)
        if self.c2p or self.p2c:
            pk, pq = self.position_tables(self.pos_dropout(rel_embeddings))
        else:
            pk = pq = x.new_zeros(1, q.shape[-1])
        return (self.core or attention_core)(self, q, k, v, pk, pq, mask, index)


def attention_core(attn: DisentangledSelfAttention, q, k, v, pk, pq, mask, index):
    """The single call site of the attention op (the default `core` of every DisentangledSelfAttention); the exporter
    sets another core on one model's modules, e.g. a custom node in `--attention debx`."""
    cfg = attn.cfg
    scale = attn.scale
    if cfg.is_v1:  # v1 divides the query side by sqrt(D * factor) before the products: same order, same rounding
        root = 1.0 / attn.scale
        q, pq, scale = q / root, pq / root, 1.0
    if q.is_cuda and attn.fused_cuda and not attn.training:
        from debx.kernels import torch_op  # lazy: Triton is only needed on CUDA machines

        if torch_op.usable(q):  # the tensor-core kernel (inference: no gradient, no dropout)
            # it reads the saturated 1-D table itself (clamped distances, as relative_index): no (N, N) index
            table = attn.rel_index_table if (attn.c2p or attn.p2c) else mask
            return torch.ops.debx.disentangled_attention(q, k, v, pk, pq, mask, table, attn.num_heads, scale,
                                                         cfg.span, cfg.buckets, cfg.max_relative, attn.c2p, attn.p2c)
    return disentangled_attention(
        q, k, v, pk, pq, mask, num_heads=attn.num_heads, scale=scale, span=cfg.span,
        position_buckets=cfg.buckets, max_relative_positions=cfg.max_relative, c2p=attn.c2p, p2c=attn.p2c,
        index=index, dropout_p=attn.dropout.p if attn.training else 0.0,
    )


class SelfOutput(nn.Module):  # dense + residual + LayerNorm (also used for the FFN output)
    def __init__(self, cfg: DebertaConfig, d_in: int):
        super().__init__()
        self.dense = nn.Linear(d_in, cfg.hidden_size)
        self.LayerNorm = layer_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: DebertaConfig, layer_index: int):
        super().__init__()
        self.self = DisentangledSelfAttention(cfg, layer_index)
        self.output = SelfOutput(cfg, cfg.hidden_size)

    def forward(self, x, mask, rel_embeddings, index):
        return self.output(self.self(x, mask, rel_embeddings, index), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = activation(cfg.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg: DebertaConfig, layer_index: int):
        super().__init__()
        self.attention = Attention(cfg, layer_index)
        self.intermediate = Intermediate(cfg)
        self.output = SelfOutput(cfg, cfg.intermediate_size)

    def forward(self, x, mask, rel_embeddings, index):  # (B, N, C) -> (B, N, C)
        a = self.attention(x, mask, rel_embeddings, index)
        return self.output(self.intermediate(a), a)


class ConvLayer(nn.Module):
    """nGiE: a 1-D convolution over the embeddings, added after the first layer (DeBERTa-v2 xlarge/xxlarge)."""

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        k = cfg.conv_kernel_size
        self.conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, k, padding=(k - 1) // 2, groups=cfg.conv_groups)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.act = activation(cfg.conv_act)

    def forward(self, embeddings, layer_out, mask):  # (B, N, C) x2, (B, N) -> (B, N, C)
        m = mask.unsqueeze(-1).to(layer_out.dtype)  # (B, N, 1)
        out = self.conv(embeddings.transpose(1, 2)).transpose(1, 2) * m
        out = self.act(self.dropout(out))
        return self.LayerNorm(layer_out + out) * m


class Encoder(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.cfg = cfg
        self.layer = nn.ModuleList([Layer(cfg, i) for i in range(cfg.num_hidden_layers)])
        if cfg.relative_attention:
            self.rel_embeddings = nn.Embedding(2 * cfg.span, cfg.hidden_size)  # (P, C)
            # relative index for every distance up to where the slot saturates; any length indexes it through a
            # clamp of the distance (no length limit, no data-dependent code)
            reach = relative_index_reach(cfg.span, cfg.buckets, cfg.max_relative)
            table = relative_index_table(reach, cfg.span, cfg.buckets, cfg.max_relative)
            self.register_buffer("rel_index_table", table, persistent=False)  # (2L-1,)
        norm = [x.strip() for x in str(cfg.norm_rel_ebd).lower().split("|")]
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if "layer_norm" in norm and not cfg.is_v1 else None
        self.conv = ConvLayer(cfg) if cfg.conv_kernel_size > 0 and not cfg.is_v1 else None

    def rel_embedding(self):  # (P, C) or None
        if not self.cfg.relative_attention:
            return None
        e = self.rel_embeddings.weight
        return self.LayerNorm(e) if self.LayerNorm is not None else e

    def forward(self, x, mask):  # (B, N, C), (B, N) -> (B, N, C)
        rel = self.rel_embedding()
        index = relative_index(self.rel_index_table, x.shape[1]) if rel is not None else None  # (N, N)
        embeddings = x
        for i, layer in enumerate(self.layer):
            x = layer(x, mask, rel, index)
            if i == 0 and self.conv is not None:
                x = self.conv(embeddings, x, mask)
        return x


class DebertaModel(nn.Module):
    """The encoder: input ids -> last hidden state (B, N, C)."""

    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # (B, N) -> (B, N, C)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids, attention_mask, token_type_ids)
        return self.encoder(x, attention_mask)


class ContextPooler(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        d = cfg.pooler_hidden_size or cfg.hidden_size
        self.dense = nn.Linear(d, d)
        self.dropout = nn.Dropout(cfg.pooler_dropout)
        self.act = activation(cfg.pooler_hidden_act)

    def forward(self, hidden):  # (B, N, C) -> (B, C): the first ([CLS]) token
        return self.act(self.dense(self.dropout(hidden[:, 0])))


class DebertaForSequenceClassification(nn.Module):
    """Classification (num_labels > 1) or regression (num_labels == 1) on the pooled [CLS] token."""

    head = "classification"

    def __init__(self, cfg: DebertaConfig):
        check_fits_in_memory(cfg, self.head)  # before any allocation
        super().__init__()
        self.config = cfg
        self.deberta = DebertaModel(cfg)
        self.pooler = ContextPooler(cfg)
        self.classifier = nn.Linear(cfg.pooler_hidden_size or cfg.hidden_size, cfg.num_labels)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob if cfg.cls_dropout is None else cfg.cls_dropout)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):  # -> logits (B, num_labels)
        h = self.deberta(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.pooler(h)))

    def loss(self, logits, labels):
        if self.config.is_regression:
            return F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
        return F.cross_entropy(logits, labels.long())


class LegacyMLMTransform(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        e = cfg.embedding_size or cfg.hidden_size
        self.dense = nn.Linear(cfg.hidden_size, e)
        self.act = activation(cfg.hidden_act)
        self.LayerNorm = nn.LayerNorm(e, eps=cfg.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class LegacyMLMHead(nn.Module):  # `cls.predictions`: transform + decoder tied to the word embeddings
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.transform = LegacyMLMTransform(cfg)
        self.decoder = nn.Linear(cfg.embedding_size or cfg.hidden_size, cfg.vocab_size)
        self.bias = self.decoder.bias

    def forward(self, x, word_embeddings):
        return self.decoder(self.transform(x))


class LegacyPredictions(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.predictions = LegacyMLMHead(cfg)


class LMHead(nn.Module):  # `lm_predictions.lm_head` (non-legacy layout): dense, LayerNorm, matmul with embeddings
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, x, word_embeddings):
        return self.LayerNorm(self.act(self.dense(x))) @ word_embeddings.weight.t() + self.bias


class LMPredictions(nn.Module):
    def __init__(self, cfg: DebertaConfig):
        super().__init__()
        self.lm_head = LMHead(cfg)


class DebertaForMaskedLM(nn.Module):
    """Masked-LM logits (B, N, vocab). The legacy decoder weight is tied to the word embeddings."""

    head = "masked-lm"

    def __init__(self, cfg: DebertaConfig):
        check_fits_in_memory(cfg, self.head)  # before any allocation
        super().__init__()
        self.config = cfg
        self.deberta = DebertaModel(cfg)
        if cfg.legacy:
            self.cls = LegacyPredictions(cfg)
            self.cls.predictions.decoder.weight = self.deberta.embeddings.word_embeddings.weight
        else:
            self.lm_predictions = LMPredictions(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.deberta(input_ids, attention_mask, token_type_ids)
        we = self.deberta.embeddings.word_embeddings
        return self.cls.predictions(h, we) if self.config.legacy else self.lm_predictions.lm_head(h, we)


class DebertaForEmbeddings(nn.Module):
    """Base model head: last hidden state (B, N, C), with the 'deberta.' prefix so task checkpoints load into it."""

    head = "embeddings"

    def __init__(self, cfg: DebertaConfig):
        check_fits_in_memory(cfg, self.head)  # before any allocation
        super().__init__()
        self.config = cfg
        self.deberta = DebertaModel(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.deberta(input_ids, attention_mask, token_type_ids)


def parameter_count(cfg: DebertaConfig, head: str = "classification") -> int:
    """How many parameters `HEADS[head](cfg)` holds, from the config alone (nothing allocated)."""
    C, I, L, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    E = cfg.embedding_size or C
    linear = lambda i, o, bias=True: i * o + (o if bias else 0)  # noqa: E731
    n = V * E + 2 * C  # word embeddings, LayerNorm
    n += cfg.max_position_embeddings * E if cfg.position_biased_input else 0
    n += cfg.type_vocab_size * E + (linear(E, C, False) if E != C else 0)
    if cfg.relative_attention:
        n += 2 * cfg.span * C
        n += 2 * C if "layer_norm" in str(cfg.norm_rel_ebd).lower() and not cfg.is_v1 else 0
    if cfg.conv_kernel_size > 0 and not cfg.is_v1:
        n += C * (C // cfg.conv_groups) * cfg.conv_kernel_size + C + 2 * C
    c2p = cfg.relative_attention and "c2p" in cfg.pos_att_type
    p2c = cfg.relative_attention and "p2c" in cfg.pos_att_type
    per_layer = linear(C, C) + 2 * C + linear(C, I) + linear(I, C) + 2 * C  # attention output, FFN
    if cfg.is_v1:
        per_layer += linear(C, 3 * C, False) + 2 * C + (linear(C, C, False) if c2p else 0) + (linear(C, C) if p2c else 0)
    else:
        per_layer += 3 * linear(C, C) + (0 if cfg.share_att_key else (c2p + p2c) * linear(C, C))
    sides = int(cfg.gi_query_side) + int(cfg.gi_key_side)
    n += L * per_layer + len(cfg.gated_layers()) * sides * 2 * linear(C, C)
    if head == "classification":
        d = cfg.pooler_hidden_size or C
        n += linear(d, d) + linear(d, cfg.num_labels)
    elif head == "masked-lm":
        n += linear(C, E) + 2 * E + V if cfg.legacy else linear(C, C) + 2 * C + V
    return n


def check_fits_in_memory(cfg: DebertaConfig, head: str) -> None:
    """Refuse, before any tensor is allocated, a model whose float32 parameters alone exceed this machine's memory
    (an absurd config would otherwise fail deep inside an allocation, or take the machine down)."""
    import os

    params = parameter_count(cfg, head)
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if 4 * params > memory:
        raise ConfigError(f"the model is too large for this machine: {params / 1e9:.1f}B parameters, "
                          f"{4 * params / 2**30:.1f} GiB in float32 (hidden_size {cfg.hidden_size}, "
                          f"{cfg.num_hidden_layers} layers, intermediate_size {cfg.intermediate_size}, vocab_size "
                          f"{cfg.vocab_size}), more than its {memory / 2**30:.1f} GiB of memory")


HEADS: dict[str, type[nn.Module]] = {
    "classification": DebertaForSequenceClassification,  # also regression (num_labels == 1)
    "masked-lm": DebertaForMaskedLM,
    "embeddings": DebertaForEmbeddings,
}


def init_weights(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Fresh weights for training from a preset: normal(0, std) linears/embeddings, unit LayerNorms."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d)):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
