"""The DeBERTa variants debx supports, listed once: name -> what it is and how to build a tiny checkpoint of it.

Every stage (export, calibrate, build, eval, bench) is tested on every entry: `tests/conftest.py` builds one tiny
random checkpoint per entry with `transformers` itself (`build_checkpoint`), and a test fails when an entry has no
fixture. Adding a variant is one entry here.

The tiny shapes keep the proportions of the real models where a code path depends on them: v3 has
`max_position_embeddings == 2 * position_buckets` (512 / 256 in v3-base), which is what TensorRT's own
`DisentangledAttention_TRT` plugin assumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from debx.errors import ConfigError

TINY = dict(  # shared by every tiny variant: 2 layers, 4 heads of 8, odd FFN width to catch shape slips;
    # weights 10x the usual init scale so attention is peaked and outputs are O(1), not a near-uniform blur that
    # would hide position-index mistakes
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=128,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, vocab_size=128100, initializer_range=0.2,
)

V3 = dict(  # DeBERTa-v3: log buckets, shared position keys, LayerNorm'd relative embeddings, no absolute positions
    model_type="deberta-v2", relative_attention=True, position_buckets=64, max_relative_positions=-1,
    pos_att_type=["p2c", "c2p"], share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
    type_vocab_size=0, layer_norm_eps=1e-7,
)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    hf_config: dict  # keyword arguments of the transformers config class (model_type picks the class)
    tokenizer: str = "spm"  # "spm": the DeBERTa-v3 SentencePiece model; "trained": a small spm trained on GLUE text
    gated: dict = field(default_factory=dict)  # giMLP: config keys; its weights are added to the saved safetensors

    @property
    def model_type(self) -> str:
        return self.hf_config["model_type"]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("v1", "DeBERTa v1: in_proj with q/v bias, linear relative positions (k=16), absolute positions",
                dict(TINY, model_type="deberta", relative_attention=True, max_relative_positions=16,
                     pos_att_type=["c2p", "p2c"], position_biased_input=True, type_vocab_size=0,
                     layer_norm_eps=1e-7)),
        Variant("v2", "DeBERTa v2 (xlarge-like): nGiE conv, separate position projections, linear positions, "
                      "token types",
                dict(TINY, model_type="deberta-v2", relative_attention=True, position_buckets=-1,
                     max_relative_positions=-1, pos_att_type=["p2c", "c2p"], share_att_key=False,
                     norm_rel_ebd="layer_norm", position_biased_input=False, type_vocab_size=2,
                     conv_kernel_size=3, conv_act="gelu", layer_norm_eps=1e-7)),
        Variant("v3", "DeBERTa v3: log-bucket positions (64 buckets over 128 positions), shared position keys",
                dict(TINY, **V3)),
        Variant("mdeberta", "mDeBERTa v3: the v3 code path with a different (here: small, trained) vocabulary",
                dict(TINY, **V3, vocab_size=1000), tokenizer="trained"),
        Variant("gimlp", "v3 with gate-with-inhibition (giMLP) on the query and key side of the last layer",
                dict(TINY, **V3),
                gated=dict(gi_query_side=True, gi_key_side=True, inhibition_level=0.3, gi_layer_num=1)),
    ]
}

HF_CLASSES = {  # (model_type, head) -> (config class, model class) in transformers
    ("deberta", "classification"): ("DebertaConfig", "DebertaForSequenceClassification"),
    ("deberta", "regression"): ("DebertaConfig", "DebertaForSequenceClassification"),
    ("deberta", "masked-lm"): ("DebertaConfig", "DebertaForMaskedLM"),
    ("deberta", "embeddings"): ("DebertaConfig", "DebertaModel"),
    ("deberta-v2", "classification"): ("DebertaV2Config", "DebertaV2ForSequenceClassification"),
    ("deberta-v2", "regression"): ("DebertaV2Config", "DebertaV2ForSequenceClassification"),
    ("deberta-v2", "masked-lm"): ("DebertaV2Config", "DebertaV2ForMaskedLM"),
    ("deberta-v2", "embeddings"): ("DebertaV2Config", "DebertaV2Model"),
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant {name!r}: choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def describe_variant(cfg) -> str:
    """The variant a debx.model.DebertaConfig belongs to, by the code paths it uses (mDeBERTa: v3 with a 250k vocab)."""
    if cfg.is_v1:
        return "v1"
    if cfg.gated_layers():
        return "gimlp"
    if cfg.buckets > 0 and cfg.share_att_key:
        return "mdeberta" if cfg.vocab_size >= 250_000 else "v3"
    return "v2"


def build_checkpoint(name: str, out_dir: str | Path, *, head: str = "classification", tokenizer_dir: str | Path | None = None,
                     seed: int = 0, transform=None, **overrides) -> Path:
    """Write a random checkpoint of variant `name` with `transformers.save_pretrained` (plus giMLP weights).

    tokenizer_dir: a folder with tokenizer files to copy in (its vocabulary must fit the variant's vocab_size).
    transform: called with the transformers model before it is saved, e.g. to give it trained-like weights.
    overrides: config keys, e.g. hidden_size=768 for benchmark shapes.
    """
    import shutil

    import torch
    import transformers

    from debx.tokenizer import _quiet_transformers

    _quiet_transformers()
    variant = get_variant(name)
    out_dir = Path(out_dir)
    kw = {k: v for k, v in {**variant.hf_config, **overrides}.items() if k != "model_type"}
    if head == "regression":
        kw.update(num_labels=1, problem_type="regression")
    cfg_cls, model_cls = (getattr(transformers, c) for c in HF_CLASSES[(variant.model_type, head)])
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**kw, **variant.gated)).eval()
    if transform is not None:
        transform(model)
    model.save_pretrained(str(out_dir))
    if variant.gated:
        _add_gate_weights(out_dir, kw, variant.gated, seed)
    if tokenizer_dir is not None:
        for f in Path(tokenizer_dir).iterdir():
            if f.is_file() and f.name not in ("config.json",) and not f.name.startswith("model"):
                shutil.copy2(f, out_dir / f.name)
    return out_dir


def trained_like(model, seed: int = 1) -> None:
    """Give a freshly initialised transformers DeBERTa (in place) weights that look trained: LayerNorm weights
    1 + 0.3*randn and biases 0.1*randn, every other bias 0.05*randn, embedding tables x2. Fresh initialisation leaves
    LayerNorm weights at one and biases at zero, equal tensors the exporter de-duplicates, which hides bugs trained
    checkpoints meet. For `build_checkpoint(..., transform=trained_like)`."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def noise(t, scale):
        return scale * torch.randn(t.shape, generator=g, dtype=t.dtype)

    with torch.no_grad():
        norms = set()
        for mod in model.modules():
            if "LayerNorm" in type(mod).__name__ and getattr(mod, "weight", None) is not None:
                mod.weight.copy_(1 + noise(mod.weight, 0.3))
                mod.bias.copy_(noise(mod.bias, 0.1))
                norms.update((id(mod.weight), id(mod.bias)))
        for name, p in model.named_parameters():
            if id(p) in norms:
                continue
            if name.endswith("bias") and p.dim() == 1:  # Linear biases, v1's q_bias / v_bias
                p.copy_(noise(p, 0.05))
            elif "embeddings" in name and p.dim() == 2 and "LayerNorm" not in name:
                p.mul_(2.0)


def _add_gate_weights(out_dir: Path, kw: dict, gated: dict, seed: int) -> None:
    """transformers has no giMLP: add inhibition_{q,k}/select_{q,k} linears of the last gi_layer_num layers."""
    import torch
    from safetensors.torch import load_file, save_file

    f = out_dir / "model.safetensors"
    state = load_file(str(f))
    prefix = "deberta." if any(k.startswith("deberta.") for k in state) else ""
    C = kw["hidden_size"]
    g = torch.Generator().manual_seed(seed + 1)
    layers = range(kw["num_hidden_layers"] - gated["gi_layer_num"], kw["num_hidden_layers"])
    sides = [s for s, on in (("q", gated.get("gi_query_side")), ("k", gated.get("gi_key_side"))) if on]
    for i in layers:
        for side in sides:
            for part in ("inhibition", "select"):
                key = f"{prefix}encoder.layer.{i}.attention.self.{part}_{side}"
                state[f"{key}.weight"] = torch.randn(C, C, generator=g) * 0.2
                state[f"{key}.bias"] = torch.randn(C, generator=g) * 0.05
    save_file(state, str(f), metadata={"format": "pt"})
    cfg = json.loads((out_dir / "config.json").read_text())
    cfg.update(gated)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
