"""Named DeBERTa-v3 shapes for training from scratch. One entry per preset; `tiny` is for tests and the quickstart."""

from __future__ import annotations

from dataclasses import replace

from debx.errors import ConfigError
from debx.model import DebertaConfig

_V3 = DebertaConfig()  # v3 switches: log buckets (256), shared position keys, LayerNorm'd relative embeddings

PRESETS: dict[str, DebertaConfig] = {
    # quickstart/tests: trains on SST-2 in minutes on 2 cores; the vocabulary follows the tokenizer
    "tiny": replace(_V3, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                    max_position_embeddings=128, position_buckets=32, max_relative_positions=128,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1),
    "xsmall": replace(_V3, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "small": replace(_V3, hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
    "base": replace(_V3),
    "large": replace(_V3, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def preset(name: str, vocab_size: int | None = None, **overrides) -> DebertaConfig:
    """A fresh copy of a preset, optionally with the tokenizer's vocabulary size and other field overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    cfg = replace(PRESETS[name], **overrides)
    if vocab_size is not None:
        cfg.vocab_size = vocab_size
        cfg.validate()
    return cfg
