"""Shared fixtures: one tiny random checkpoint per registered variant (debx.variants.VARIANTS), written by
`transformers` itself, with the tokenizer the variant uses. Built once per test session.

    tiny_checkpoints       {variant name: checkpoint folder}  (classification heads, 2 labels)
    tiny_head_checkpoints  {head: checkpoint folder}  for classification, regression, masked-lm and embeddings
                           (the small-vocabulary variant, so masked-LM logits stay small)
    trained_like_checkpoints
                           {variant name: checkpoint folder}  like tiny_checkpoints (also written by transformers'
                           `save_pretrained`), with weights that look trained (debx.variants.trained_like):
                           LayerNorm weights 1 + 0.3*randn and biases 0.1*randn, every other bias 0.05*randn,
                           embedding tables x2. Fresh initialisation leaves every LayerNorm weight at one and every
                           bias at zero, equal tensors the exporter de-duplicates, which hid bugs users meet
                           (issue 11: `export --fp16` failed on every trained model). Use these for user paths.
    glue_dir               the shared GLUE folder
    hf_glue_logits         hf_glue_logits(checkpoint, glue_dir, with_types) -> [(feeds, logits)]: transformers' own
                           FP32 classification logits on padded SST-2 + MRPC dev rows, with the int64 feeds

tests/test_fixtures.py fails when a registered variant has no usable fixture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 shared cores: one thread per test process (torch and ONNX Runtime)
if not Path("/dev/nvidiactl").exists():  # no NVIDIA GPU: Triton kernels run in the interpreter (set before any import)
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
GLUE = Path(os.environ.get("GLUE_DIR") or ROOT.parent / "shared" / "glue")
SPM = ROOT.parent / "shared" / "tokenizers" / "deberta-v3" / "spm.model"
HEAD_VARIANT = "mdeberta"  # small vocabulary: masked-LM logits (B, N, vocab) stay small
TRAINED_VOCAB = 1000


def _quiet() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _spm_tokenizer_dir(root: Path) -> Path:
    """The real DeBERTa-v3 SentencePiece tokenizer (128k vocabulary), saved as a checkpoint would hold it."""
    from debx.tokenizer import save_tokenizer, spm_tokenizer

    out = root / "tok-spm"
    save_tokenizer(spm_tokenizer(SPM), out)
    return out


def _trained_tokenizer_dir(root: Path) -> Path:
    """A small SentencePiece model trained on SST-2 training text (the route `debx train --preset` takes)."""
    from debx.tasks import load_split
    from debx.tokenizer import save_tokenizer, spm_tokenizer, train_spm

    texts = [e.text_a for e in load_split("sst2", GLUE, "train", limit=4000)]
    spm = train_spm(texts, root / "trained.model", vocab_size=TRAINED_VOCAB)
    out = root / "tok-trained"
    save_tokenizer(spm_tokenizer(spm), out)
    return out


TOKENIZER_BUILDERS = {"spm": _spm_tokenizer_dir, "trained": _trained_tokenizer_dir}


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    if not GLUE.is_dir():
        pytest.fail(f"GLUE data not found at {GLUE} (set $GLUE_DIR)")
    return GLUE


def _hf_glue_logits(checkpoint: Path, glue_dir: Path, with_types: bool):
    """transformers' FP32 logits on padded SST-2 + MRPC dev rows, and the matching int64 feeds."""
    import numpy as np
    import torch
    import transformers

    from debx.tasks import load_split

    tok = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    singles = [e.text_a for e in load_split("sst2", glue_dir, "dev", limit=6)]
    pairs = load_split("mrpc", glue_dir, "dev", limit=2)
    enc = tok(singles, padding=True, truncation=True, max_length=128, return_tensors="np")
    enc_pairs = tok([p.text_a for p in pairs], [p.text_b for p in pairs], padding=True, truncation=True,
                    max_length=128, return_tensors="np")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(checkpoint)).eval()
    out = []
    for e in (enc, enc_pairs):
        feeds = {"input_ids": e["input_ids"].astype(np.int64), "attention_mask": e["attention_mask"].astype(np.int64)}
        if with_types:
            feeds["token_type_ids"] = e["token_type_ids"].astype(np.int64)
        with torch.no_grad():
            logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        out.append((feeds, logits))
    return out


@pytest.fixture(scope="session")
def hf_glue_logits():
    return _hf_glue_logits


@pytest.fixture(scope="session")
def tiny_tokenizers(tmp_path_factory, glue_dir) -> dict[str, Path]:
    """{tokenizer kind: folder with tokenizer files}, built lazily for the kinds the variants use."""
    from debx.variants import VARIANTS

    root = tmp_path_factory.mktemp("tiny-tokenizers")
    kinds = sorted({v.tokenizer for v in VARIANTS.values()})
    return {kind: TOKENIZER_BUILDERS[kind](root) for kind in kinds}


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, tiny_tokenizers) -> dict[str, Path]:
    """{variant: checkpoint folder} for every entry of debx.variants.VARIANTS."""
    from debx.variants import VARIANTS, build_checkpoint

    _quiet()
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    return {name: build_checkpoint(name, root / name, tokenizer_dir=tiny_tokenizers[v.tokenizer])
            for name, v in VARIANTS.items()}


@pytest.fixture(scope="session")
def trained_like_checkpoints(tmp_path_factory, tiny_tokenizers) -> dict[str, Path]:
    """{variant: checkpoint folder} for every entry of debx.variants.VARIANTS, with trained-like weights."""
    from debx.variants import VARIANTS, build_checkpoint, trained_like

    _quiet()
    root = tmp_path_factory.mktemp("trained-like-checkpoints")
    return {name: build_checkpoint(name, root / name, tokenizer_dir=tiny_tokenizers[v.tokenizer], seed=1,
                                   transform=trained_like)
            for name, v in VARIANTS.items()}


@pytest.fixture(scope="session")
def tiny_head_checkpoints(tmp_path_factory, tiny_tokenizers) -> dict[str, Path]:
    """{head: checkpoint folder} of the small-vocabulary variant, one per head debx exports."""
    from debx.runtimes import HEAD_OUTPUTS
    from debx.variants import VARIANTS, build_checkpoint

    _quiet()
    root = tmp_path_factory.mktemp("tiny-heads")
    tok = tiny_tokenizers[VARIANTS[HEAD_VARIANT].tokenizer]
    return {head: build_checkpoint(HEAD_VARIANT, root / head, head=head, tokenizer_dir=tok) for head in HEAD_OUTPUTS}
