"""DebertaConfig refuses what it cannot build, before anything is allocated (issue 11, items 5 and 8): zero or
negative sizes, bad keys of config.json (giMLP typos included), and models whose parameters alone exceed the
machine's memory. Through the CLI each is one `debx: error:` line and exit 2."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from debx.checkpoint import load_model, read_config
from debx.errors import CheckpointError, ConfigError
from debx.model import HEADS, DebertaConfig, parameter_count

SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64, position_buckets=16, max_relative_positions=64)


@pytest.mark.parametrize("change, match", [
    (dict(hidden_size=0), "hidden_size must be an integer >= 1, got 0"),
    (dict(hidden_size=-32), "hidden_size must be an integer >= 1, got -32"),
    (dict(num_attention_heads=0), "num_attention_heads must be an integer >= 1, got 0"),
    (dict(num_hidden_layers=-1), "num_hidden_layers must be an integer >= 1"),
    (dict(vocab_size=0), "vocab_size must be an integer >= 1"),
    (dict(intermediate_size=-5), "intermediate_size must be an integer >= 1, got -5"),
    (dict(max_position_embeddings=0), "max_position_embeddings must be an integer >= 1"),
    (dict(type_vocab_size=-2), "type_vocab_size must be an integer >= 0"),
    (dict(hidden_size=30), "not a multiple of 4 heads"),
    (dict(hidden_size=32.0), "hidden_size must be an integer"),
    (dict(num_labels=0), "num_labels must be an integer >= 1"),
    (dict(embedding_size=0), "embedding_size must be an integer >= 1"),
    (dict(pad_token_id=100), r"pad_token_id must be an integer in \[0, vocab_size 100\)"),
    (dict(hidden_dropout_prob=2.0), r"hidden_dropout_prob must be a probability in \[0, 1\], got 2.0"),
    (dict(layer_norm_eps=float("nan")), "layer_norm_eps must be a finite number"),
    (dict(hidden_act="gelu2"), "hidden_act 'gelu2' is not supported"),
    (dict(max_relative_positions=8), "max_relative_positions 8 must exceed position_buckets/2"),
    (dict(gi_max_scope="exampel"), "gi_max_scope 'exampel' is not one of 'batch', 'example'"),
    (dict(model_type="bert"), "unsupported model_type 'bert'"),
])
def test_bad_values_are_one_config_error(change, match):
    with pytest.raises(ConfigError, match=match) as e:
        DebertaConfig(**{**SMALL, **change})
    assert "\n" not in str(e.value)


def test_good_configs_still_load():
    DebertaConfig(**SMALL)
    DebertaConfig()  # v3-base defaults
    DebertaConfig(**{**SMALL, "model_type": "deberta", "position_buckets": -1, "max_relative_positions": -1})


def test_misspelt_gimlp_keys_are_refused():
    hf = dict(SMALL, model_type="deberta-v2", gi_query_side=True, gi_layer_num=1, inhibition_level=0.3)
    assert DebertaConfig.from_hf_dict(dict(hf, gi_max_scope="example")).gi_max_scope == "example"
    with pytest.raises(ConfigError, match="unknown giMLP key gi_max_scop .*known: .*gi_max_scope"):
        DebertaConfig.from_hf_dict(dict(hf, gi_max_scop="example"))
    with pytest.raises(ConfigError, match="gi_max_scope 'per-example' is not one of 'batch', 'example'"):
        DebertaConfig.from_hf_dict(dict(hf, gi_max_scope="per-example"))


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("kw", [
    dict(SMALL),
    dict(SMALL, model_type="deberta", position_biased_input=True, position_buckets=-1, pos_att_type="c2p|p2c"),
    dict(SMALL, model_type="deberta", pos_att_type="p2c", max_relative_positions=-1),
    dict(SMALL, embedding_size=16, type_vocab_size=2, share_att_key=False, pos_att_type="c2p|p2c",
         conv_kernel_size=3, conv_groups=4, legacy=False),
    dict(SMALL, embedding_size=16, num_labels=3, gi_query_side=True, gi_key_side=True, gi_layer_num=1),
    dict(SMALL, relative_attention=False, norm_rel_ebd="none"),
])
def test_parameter_count_is_exact(kw, head):
    cfg = DebertaConfig(**kw)
    model = HEADS[head](cfg)
    assert parameter_count(cfg, head) == sum(p.numel() for p in model.parameters())


def test_a_model_larger_than_memory_is_refused_before_any_allocation(monkeypatch):
    def no_alloc(*a, **k):
        raise AssertionError("allocated before the size check")

    monkeypatch.setattr(torch.nn.Embedding, "__init__", no_alloc)
    monkeypatch.setattr(torch.nn.Linear, "__init__", no_alloc)
    cfg = DebertaConfig(hidden_size=65536, num_hidden_layers=48, num_attention_heads=64)
    for head in HEADS:
        with pytest.raises(ConfigError, match=r"too large for this machine: .*B parameters, .* GiB in float32 .*"
                                              r"hidden_size 65536, 48 layers"):
            HEADS[head](cfg)


def _checkpoint_with(tmp_path, tiny_checkpoints, name, **changes):
    out = tmp_path / name
    shutil.copytree(tiny_checkpoints["gimlp"], out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(changes)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=65536, num_hidden_layers=48), "the model is too large for this machine"),
    (dict(num_attention_heads=0), "invalid config: num_attention_heads must be an integer >= 1, got 0"),
    (dict(intermediate_size=-5), "invalid config: intermediate_size must be an integer >= 1, got -5"),
    (dict(gi_max_scope="exampel"), "invalid config: gi_max_scope 'exampel' is not one of 'batch', 'example'"),
    (dict(gi_max_scop="example"), "invalid config: unknown giMLP key gi_max_scop"),
])
def test_cli_says_one_line_and_exits_2(tmp_path, tiny_checkpoints, monkeypatch, capsys, changes, message):
    from debx.cli import main as debx_main

    ckpt = _checkpoint_with(tmp_path, tiny_checkpoints, "bad", **changes)
    out = tmp_path / "out" / "m.onnx"
    monkeypatch.setattr(sys, "argv", ["debx", "export", str(ckpt), "-o", str(out)])
    with pytest.raises(SystemExit) as e:
        debx_main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert len(err) == 1 and err[0].startswith(f"debx: error: {ckpt}") and message in err[0], err
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_read_config_names_the_file(tmp_path, tiny_checkpoints):
    ckpt = _checkpoint_with(tmp_path, tiny_checkpoints, "neg", vocab_size=-1)
    with pytest.raises(CheckpointError, match=r"config.json: invalid config: vocab_size must be an integer >= 1"):
        read_config(ckpt)
    with pytest.raises(CheckpointError):
        load_model(ckpt)
