"""Tokenizers: the one in a checkpoint folder, a SentencePiece model file, or one trained on a task's text.

DeBERTa-v2/v3 use SentencePiece (`spm.model`, ids [PAD]=0 [CLS]=1 [SEP]=2 [UNK]=3, [MASK] appended); v1 uses GPT-2
BPE files. Encoding follows the transformers tokenizers exactly: `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]`.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from debx.errors import CheckpointError, ConfigError, DataError

MIN_VOCAB = 8  # a trained tokenizer's smallest vocabulary: the special pieces and a few characters
OVERFLOW = ("truncate", "refuse")  # what encode() does with a sequence over the length limit
SPECIAL = {"pad": "[PAD]", "cls": "[CLS]", "sep": "[SEP]", "unk": "[UNK]", "mask": "[MASK]"}


def _quiet_transformers():
    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return transformers


def spm_tokenizer(spm_file: str | Path):
    """A transformers DeBERTa-v2 tokenizer built from a SentencePiece model file (transformers 4.x and 5.x)."""
    spm_file = Path(spm_file)
    if not spm_file.is_file():
        raise ConfigError(f"{spm_file}: SentencePiece model not found")
    T = _quiet_transformers()
    try:  # transformers 5: tokenizers-backed class built from the proto
        from transformers.convert_slow_tokenizer import SentencePieceExtractor

        kwargs = SentencePieceExtractor(str(spm_file)).extract(T.DebertaV2Tokenizer.model)
        tok = T.DebertaV2Tokenizer(**kwargs)
    except (ImportError, AttributeError, TypeError):  # transformers 4: the sentencepiece-backed class
        tok = T.DebertaV2Tokenizer(vocab_file=str(spm_file))
    except Exception as e:
        raise ConfigError(f"{spm_file}: not a usable SentencePiece model ({str(e).splitlines()[0][:120]})") from None
    tok.init_kwargs["vocab_file"] = str(spm_file)
    return tok


def _normalizer_steps(step) -> list[dict]:
    """The steps of a tokenizer.json normalizer, Sequence flattened."""
    if not isinstance(step, dict):
        return []
    if step.get("type") == "Sequence":
        return [s for inner in step.get("normalizers", []) for s in _normalizer_steps(inner)]
    return [step]


def checkpoint_normalization(folder: str | Path) -> tuple[str, str]:
    """Which transformers normalization a checkpoint folder was written with, and why: ("transformers4", reason) or
    ("transformers5", reason). The rule of the C++ runtime (plugins/runtime/tokenizer.h checkpointNormalization):
    tokenizer.json's normalizer (a Precompiled NFKC-charsmap step: 4; else 5), else config.json's
    transformers_version, else 5."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        try:
            normalizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")).get("normalizer")
        except (ValueError, AttributeError):
            raise CheckpointError(f"{folder / 'tokenizer.json'}: not valid JSON") from None
        if any(s.get("type") == "Precompiled" for s in _normalizer_steps(normalizer)):
            return "transformers4", f"{folder / 'tokenizer.json'}: its normalizer has a Precompiled (NFKC) step"
        return "transformers5", f"{folder / 'tokenizer.json'}: its normalizer has no Precompiled step"
    try:
        version = str(json.loads((folder / "config.json").read_text(encoding="utf-8"))["transformers_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "transformers5", f"no tokenizer.json or recorded transformers version in {folder}"
    major = version.split(".")[0]
    family = "transformers4" if major.isdigit() and int(major) < 5 else "transformers5"
    return family, f"{folder / 'config.json'}: written by transformers {version}"


def _transformers4_normalizer(folder: Path):
    """The normalizer transformers 4 runs for this checkpoint: tokenizer.json's, else the one its converter builds
    from spm.model (DebertaV2Converter: [lowercase,] strip, the precompiled NFKC charsmap, runs of spaces)."""
    from tokenizers import Regex, Tokenizer, normalizers

    if (folder / "tokenizer.json").is_file():
        stored = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["normalizer"]
        shell = {"version": "1.0", "normalizer": stored,
                 "model": {"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"}}
        return Tokenizer.from_str(json.dumps(shell)).normalizer  # the normalizer alone, not the 128k vocabulary
    if not (folder / "spm.model").is_file():
        return None
    from transformers.convert_slow_tokenizer import import_protobuf

    proto = import_protobuf().ModelProto()
    proto.ParseFromString((folder / "spm.model").read_bytes())
    try:
        lower = bool(json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")).get("do_lower_case"))
    except (OSError, ValueError, AttributeError):
        lower = False
    charsmap = proto.normalizer_spec.precompiled_charsmap
    steps = ([normalizers.Lowercase()] if lower else []) + [normalizers.Strip()]
    steps += [normalizers.Precompiled(charsmap)] if charsmap else []
    return normalizers.Sequence(steps + [normalizers.Replace(Regex(" {2,}"), " ")])


def _keep_checkpoint_normalization(tok, folder: Path):
    """transformers 5 rebuilds DebertaV2Tokenizer's normalizer in code (NFC) and ignores the one a transformers 4
    checkpoint stored (the spm model's NFKC charsmap), so "µ", "ﬁ", "½", "…" would reach the model as [UNK] where
    fine-tuning saw "μ", "fi", "1⁄2", "...". Put the checkpoint's normalizer back (the C++ runtime does the same)."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None or checkpoint_normalization(folder)[0] != "transformers4":
        return tok
    wanted = _transformers4_normalizer(folder)
    if wanted is not None and wanted.__getstate__() != getattr(backend.normalizer, "__getstate__", lambda: None)():
        backend.normalizer = wanted
    return tok


def load_tokenizer(path: str | Path):
    """The tokenizer stored in a checkpoint folder (or an spm.model file), normalizing text the way the checkpoint's
    transformers version did (checkpoint_normalization)."""
    path = Path(path)
    if path.is_file():  # the folder holding spm.model decides, as in the C++ runtime
        return _keep_checkpoint_normalization(spm_tokenizer(path), path.parent)
    T = _quiet_transformers()
    if (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tok = T.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            return _keep_checkpoint_normalization(tok, path)
        except Exception as e:
            if not (path / "spm.model").is_file():
                raise CheckpointError(f"{path}: cannot load tokenizer ({str(e).splitlines()[0][:160]})") from None
    if (path / "spm.model").is_file():
        return _keep_checkpoint_normalization(spm_tokenizer(path / "spm.model"), path)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        try:  # DeBERTa v1: GPT-2 byte-level BPE files
            return T.DebertaTokenizer.from_pretrained(str(path), local_files_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot load the BPE tokenizer ({str(e).splitlines()[0][:160]})") from None
    raise CheckpointError(f"{path}: no tokenizer files (expected tokenizer.json, spm.model or vocab.json + merges.txt)")


def save_tokenizer(tokenizer, out_dir: str | Path) -> None:
    """Write tokenizer files (tokenizer.json + config, and spm.model when there is one for the C++ runtime)."""
    out_dir = Path(out_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenizer.save_pretrained(str(out_dir))
    spm = tokenizer.init_kwargs.get("vocab_file")
    if spm and Path(spm).name.endswith(".model") and Path(spm).is_file() and not (out_dir / "spm.model").exists():
        shutil.copy2(spm, out_dir / "spm.model")


def train_spm(texts: Sequence[str], out_file: str | Path, vocab_size: int = 8000, seed: int = 0) -> Path:
    """Train a DeBERTa-style SentencePiece (unigram) model on task text; ids 0-3 are [PAD] [CLS] [SEP] [UNK]."""
    import sentencepiece as spm

    out_file = Path(out_file)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise DataError("cannot train a tokenizer: no text")
    with tempfile.TemporaryDirectory() as td:
        corpus = Path(td) / "corpus.txt"
        corpus.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n")
        prefix = Path(td) / "spm"
        try:
            spm.SentencePieceTrainer.train(
                input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type="unigram",
                character_coverage=1.0, pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2,
                eos_piece="[SEP]", unk_id=3, unk_piece="[UNK]", hard_vocab_limit=False,
                num_threads=2, minloglevel=2, shuffle_input_sentence=True, input_sentence_size=200_000,
            )
        except RuntimeError as e:  # SentencePiece reports settings the text cannot support as RuntimeError
            import re

            m = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(e))
            if m:
                raise ConfigError(f"--vocab-size {vocab_size} is too small for this text: its {int(m.group(2)) - 4} "
                                  f"distinct characters and the 4 special pieces need at least {m.group(2)}") from None
            raise ConfigError(f"cannot train a {vocab_size}-piece SentencePiece tokenizer on this text: "
                              f"{str(e).splitlines()[0][-200:]}") from None
        out_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(prefix.with_suffix(".model"), out_file)
    return out_file


@dataclass
class Encoded:
    """Token ids of a list of examples, unpadded; `batch()` pads a slice to its longest row (dynamic padding)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    truncated: int = 0  # how many examples were cut to max_len

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, rows: Sequence[int] | slice, pad_id: int = 0, pad_to: int | None = None) -> dict[str, np.ndarray]:
        idx = range(len(self))[rows] if isinstance(rows, slice) else rows
        ids = [self.input_ids[i] for i in idx]
        n = max(pad_to or 0, max(len(x) for x in ids))
        out_ids = np.full((len(ids), n), pad_id, dtype=np.int64)
        out_tt = np.zeros((len(ids), n), dtype=np.int64)
        mask = np.zeros((len(ids), n), dtype=np.int64)
        for r, i in enumerate(idx):
            L = len(self.input_ids[i])
            out_ids[r, :L] = self.input_ids[i]
            out_tt[r, :L] = self.token_type_ids[i]
            mask[r, :L] = 1
        return {"input_ids": out_ids, "attention_mask": mask, "token_type_ids": out_tt}


def encode(tokenizer, text_a: Sequence[str], text_b: Sequence[str | None] | None, max_len: int,
           overflow: str = "truncate") -> Encoded:
    """Tokenize pairs like transformers does. overflow: "truncate" (longest-first, counted) or "refuse" (DataError)."""
    if overflow not in OVERFLOW:
        raise ConfigError(f"overflow must be 'truncate' or 'refuse', not {overflow!r}")
    pairs = text_b is not None and any(b is not None for b in text_b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = tokenizer(list(text_a), list(text_b) if pairs else None, truncation=False, return_token_type_ids=True)
    lengths = [len(x) for x in full["input_ids"]]
    too_long = [i for i, n in enumerate(lengths) if n > max_len]
    if too_long and overflow == "refuse":
        i = too_long[0]
        raise DataError(f"{len(too_long)} example(s) longer than --max-seq-len {max_len} (first: #{i}, {lengths[i]} tokens); "
                        "use truncation or a larger limit")
    if too_long:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cut = tokenizer([text_a[i] for i in too_long], [text_b[i] for i in too_long] if pairs else None,
                            truncation=True, max_length=max_len, return_token_type_ids=True)
        for j, i in enumerate(too_long):
            full["input_ids"][i] = cut["input_ids"][j]
            full["token_type_ids"][i] = cut["token_type_ids"][j]
    return Encoded(list(full["input_ids"]), list(full["token_type_ids"]), truncated=len(too_long))
