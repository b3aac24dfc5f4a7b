"""The variant registry and its fixtures: every registered variant has a tiny checkpoint that loads, tokenizes
real text within its vocabulary, and is the variant it claims to be."""

from __future__ import annotations

import pytest

from debx.checkpoint import load_model, read_config
from debx.tokenizer import encode, load_tokenizer
from debx.variants import VARIANTS, describe_variant


def test_every_registered_variant_has_a_fixture(tiny_checkpoints):
    assert set(tiny_checkpoints) == set(VARIANTS), "add the new variant's fixture in tests/conftest.py"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fixture_is_the_variant_it_claims(tiny_checkpoints, name):
    variant = VARIANTS[name]
    cfg, raw = read_config(tiny_checkpoints[name])
    assert raw["model_type"] == variant.model_type
    for key in ("position_buckets", "max_relative_positions", "share_att_key", "type_vocab_size", "conv_kernel_size"):
        if key in variant.hf_config:
            assert raw[key] == variant.hf_config[key], key
    model, ckpt = load_model(tiny_checkpoints[name])
    expected = {"mdeberta": "v3"}.get(name, name)  # the tiny mDeBERTa differs from v3 only in its vocabulary
    assert describe_variant(ckpt.config) == expected
    tok = load_tokenizer(tiny_checkpoints[name])
    enc = encode(tok, ["A quiet, patient portrait of a family."], None, 64)
    assert max(enc.input_ids[0]) < cfg.vocab_size
    if variant.gated:
        assert ckpt.config.gated_layers() == (cfg.num_hidden_layers - 1,)
