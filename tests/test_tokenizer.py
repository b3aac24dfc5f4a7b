"""debx.tokenizer: the real DeBERTa-v3 SentencePiece model, trained tokenizers, pair encoding, overflow policy."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm

from debx.errors import CheckpointError, DataError
from debx.tasks import get_task, load_split
from debx.tokenizer import encode, load_tokenizer, save_tokenizer, train_spm

ROOT = Path(__file__).resolve().parents[1]
SPM = ROOT.parent / "shared" / "tokenizers" / "deberta-v3" / "spm.model"
GLUE = ROOT.parent / "shared" / "glue"


@pytest.fixture(scope="module")
def v3():
    return load_tokenizer(SPM)


def test_v3_special_ids_and_pieces_match_sentencepiece(v3):
    assert (v3.pad_token_id, v3.cls_token_id, v3.sep_token_id, v3.unk_token_id) == (0, 1, 2, 3)
    assert v3.mask_token_id == 128000
    sp = spm.SentencePieceProcessor(model_file=str(SPM))
    for ex in load_split(get_task("rte"), GLUE, "dev", limit=20):
        ids = v3(ex.text_a, ex.text_b)["input_ids"]
        assert ids == [1, *sp.encode(ex.text_a), 2, *sp.encode(ex.text_b), 2]


def test_encode_truncates_pairs_longest_first_or_refuses(v3):
    rte = load_split(get_task("rte"), GLUE, "dev", limit=8)
    a, b = [e.text_a for e in rte], [e.text_b for e in rte]
    enc = encode(v3, a, b, 32)
    assert enc.truncated > 0 and max(len(x) for x in enc.input_ids) == 32
    assert all(x[0] == 1 and x[-1] == 2 and x.count(2) == 2 for x in enc.input_ids)
    batch = enc.batch([0, 1])
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    with pytest.raises(DataError, match="longer than --max-seq-len 32"):
        encode(v3, a, b, 32, overflow="refuse")


def test_trained_tokenizer_round_trips_through_a_checkpoint_folder(tmp_path):
    texts = [e.text_a for e in load_split(get_task("sst2"), GLUE, "train", limit=3000)]
    tok = load_tokenizer(train_spm(texts, tmp_path / "spm.model", vocab_size=500))
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    save_tokenizer(tok, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "spm.model").is_file()
    again = load_tokenizer(tmp_path / "ckpt")
    assert again(texts[:5])["input_ids"] == tok(texts[:5])["input_ids"]


def test_folder_without_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer files"):
        load_tokenizer(tmp_path)


def test_v1_gpt2_bpe_files_load(tmp_path):
    """DeBERTa v1 checkpoints carry GPT-2 byte-level BPE files (vocab.json + merges.txt)."""
    import json

    vocab = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[UNK]": 3, "[MASK]": 4}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab["\u0120" + c] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = load_tokenizer(tmp_path)
    ids = tok("ab", "c")["input_ids"]
    assert ids == [1, vocab["a"], vocab["b"], 2, 2, vocab["c"], 2]  # RoBERTa-style pair: [CLS] a [SEP] [SEP] b [SEP]
