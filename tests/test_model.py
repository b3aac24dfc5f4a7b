"""debx.model and debx.checkpoint against transformers itself, for every registered variant and head."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from debx.checkpoint import load_model, save_checkpoint
from debx.errors import CheckpointError
from debx.model import log_bucket, relative_index, relative_index_table
from debx.tasks import get_task, load_split
from debx.tokenizer import encode, load_tokenizer
from debx.variants import HF_CLASSES, VARIANTS, build_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT.parent / "shared" / "glue"
SPM = ROOT.parent / "shared" / "tokenizers" / "deberta-v3" / "spm.model"
HEADS = ("classification", "regression", "masked-lm", "embeddings")


@pytest.fixture(scope="module")
def glue_batch():
    """Real RTE pairs (long, truncated at 128) and SST-2 sentences (short), padded together: 6 rows."""
    tok = load_tokenizer(SPM)
    rte = load_split(get_task("rte"), GLUE, "dev", limit=3)
    sst = load_split(get_task("sst2"), GLUE, "dev", limit=3)
    a = encode(tok, [e.text_a for e in rte], [e.text_b for e in rte], 128)
    b = encode(tok, [e.text_a for e in sst], None, 128)
    a.input_ids += b.input_ids
    a.token_type_ids += b.token_type_ids
    batch = a.batch(range(6))
    assert batch["attention_mask"].sum(1).min() < batch["attention_mask"].shape[1]  # there is padding
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def _feeds(batch, vocab_size: int, type_vocab: int):
    ids = batch["input_ids"].clone()
    big = ids >= vocab_size
    ids[big] = 4 + ids[big] % (vocab_size - 4)  # keep specials, fold the rest into a small vocabulary
    feeds = {"input_ids": ids, "attention_mask": batch["attention_mask"]}
    if type_vocab > 0:
        feeds["token_type_ids"] = batch["token_type_ids"]
    return feeds


def _gate_hooks(hf_model, cfg: dict, state_gi: dict):
    """Reference giMLP on the transformers model: gate the content query/key projections of the gated layers.

    The gate is applied to the (B, N, C) content call of query_proj/key_proj only; the (1, P, C) call on the
    relative embeddings (share_att_key) is left alone, as in the reference implementation; the test batch has 6 rows.
    """
    prefix = "deberta." if any(k.startswith("deberta.") for k in state_gi) else ""
    handles = []
    for i, layer in enumerate(hf_model.base_model.encoder.layer):
        for side, proj in (("q", "query_proj"), ("k", "key_proj")):
            key = f"{prefix}encoder.layer.{i}.attention.self.inhibition_{side}.weight"
            if key not in state_gi:
                continue
            inh = (state_gi[key], state_gi[key.replace(".weight", ".bias")])
            sel_key = key.replace("inhibition_", "select_")
            sel = (state_gi[sel_key], state_gi[sel_key.replace(".weight", ".bias")])

            def hook(mod, args, out, inh=inh, sel=sel):
                x = args[0]
                if x.shape[0] == 1:
                    return out
                s = F.linear(F.gelu(F.linear(x, *inh)), *sel)
                return out * (F.gelu(s - cfg["inhibition_level"] * torch.max(s)) + 1)

            handles.append(getattr(layer.attention.self, proj).register_forward_hook(hook))
    return handles


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", list(VARIANTS))
def test_parity_with_transformers(tmp_path, glue_batch, name, head):
    import transformers
    from safetensors.torch import load_file

    variant = VARIANTS[name]
    ckpt = build_checkpoint(name, tmp_path / name, head=head)
    cfg_cls, model_cls = HF_CLASSES[(variant.model_type, head)]
    hf = getattr(transformers, model_cls).from_pretrained(str(ckpt)).eval()
    ours, info = load_model(ckpt)
    assert info.head == head.replace("regression", "classification")
    feeds = _feeds(glue_batch, variant.hf_config["vocab_size"], variant.hf_config.get("type_vocab_size", 0))
    handles = []
    if variant.gated:
        handles = _gate_hooks(hf, variant.gated, load_file(str(ckpt / "model.safetensors")))
        assert handles, "the giMLP fixture must gate at least one projection"
    with torch.no_grad():
        ref = hf(**feeds)
        ref = ref.logits if head != "embeddings" else ref.last_hidden_state
        got = ours(**feeds)
    for h in handles:
        h.remove()
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", list(VARIANTS))
def test_save_round_trip_loads_in_transformers(tmp_path, glue_batch, name):
    import transformers

    variant = VARIANTS[name]
    src = build_checkpoint(name, tmp_path / "src")
    ours, _ = load_model(src)
    out = save_checkpoint(ours, tmp_path / "out")
    again, info = load_model(out)
    feeds = _feeds(glue_batch, variant.hf_config["vocab_size"], variant.hf_config.get("type_vocab_size", 0))
    with torch.no_grad():
        assert torch.equal(ours(**feeds), again(**feeds))
        if not variant.gated:  # transformers has no giMLP; everything else must load there too
            hf = getattr(transformers, HF_CLASSES[(variant.model_type, "classification")][1]).from_pretrained(str(out))
            assert (hf.eval()(**feeds).logits - ours(**feeds)).abs().max() <= 1e-5
    assert json.loads((out / "config.json").read_text())["model_type"] == variant.model_type
    if variant.gated:
        assert info.config.gated_layers() == (1,)


def test_pytorch_model_bin_is_loaded_with_weights_only(tmp_path, glue_batch):
    src = build_checkpoint("v3", tmp_path / "src")
    from safetensors.torch import load_file

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "config.json").write_text((src / "config.json").read_text())
    torch.save(load_file(str(src / "model.safetensors")), bin_dir / "pytorch_model.bin")
    a, _ = load_model(src)
    b, _ = load_model(bin_dir)
    feeds = _feeds(glue_batch, 128100, 0)
    with torch.no_grad():
        assert torch.equal(a(**feeds), b(**feeds))


def test_bad_checkpoints_fail_with_one_clear_line(tmp_path):
    src = build_checkpoint("v3", tmp_path / "good")
    cases = {}
    cases["missing"] = tmp_path / "nope"
    (tmp_path / "empty").mkdir()
    cases["not a checkpoint"] = tmp_path / "empty"
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text((src / "config.json").read_text())
    (corrupt / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes()[:1000])
    cases["corrupt"] = corrupt
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cases["unsupported"] = bert
    noweights = tmp_path / "noweights"
    noweights.mkdir()
    (noweights / "config.json").write_text((src / "config.json").read_text())
    cases["no weights"] = noweights
    messages = {}
    for what, path in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_model(path)
        messages[what] = str(e.value)
        assert "\n" not in messages[what] and str(path) in messages[what]
    assert "unsupported model_type 'bert'" in messages["unsupported"]
    assert "corrupt" in messages["corrupt"]


@pytest.mark.parametrize("buckets,max_rel,n", [(0, 16, 40), (16, 128, 128), (64, 128, 77), (256, 512, 512)])
def test_relative_index_matches_transformers(buckets, max_rel, n):
    from transformers.models.deberta_v2.modeling_deberta_v2 import build_relative_position

    span = buckets if buckets > 0 else max_rel
    q = torch.zeros(1, n, 4)
    ref = build_relative_position(q, q, bucket_size=buckets if buckets else -1, max_position=max_rel)[0]
    ref = torch.clamp(ref + span, 0, 2 * span - 1)
    table = relative_index_table(max(n, 128), span, buckets, max_rel)
    assert torch.equal(relative_index(table, n), ref)
    if buckets:
        r = torch.arange(-n + 1, n)
        assert torch.equal(log_bucket(-r, buckets, max_rel), -log_bucket(r, buckets, max_rel))  # odd: p2c == c2p index
