"""debx.tokenizer: the real DeBERTa-v3 SentencePiece model, trained tokenizers, pair encoding, overflow policy."""

from __future__ import annotations

import json
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


NFKC = ["µGuru microcontroller", "a ﬁne ﬁsh", "½ cup", "wait…", "Ｆｕｌｌ width"]


def _checkpoint(folder: Path, transformers_version: str) -> Path:
    folder.mkdir()
    (folder / "spm.model").write_bytes(SPM.read_bytes())
    config = {"model_type": "deberta-v2", "transformers_version": transformers_version}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_normalization_follows_the_checkpoints_transformers_version(tmp_path):
    """transformers 4 normalized with the spm model's NFKC charsmap, transformers 5 with NFC only (and ignores a
    4.x checkpoint's stored normalizer); load_tokenizer keeps what the checkpoint was written with."""
    from debx.tokenizer import checkpoint_normalization

    old = _checkpoint(tmp_path / "v4", "4.57.6")
    new = _checkpoint(tmp_path / "v5", "5.24.0")
    assert checkpoint_normalization(old) == ("transformers4", f"{old / 'config.json'}: written by transformers 4.57.6")
    assert checkpoint_normalization(new)[0] == "transformers5"
    t4, t5 = load_tokenizer(old), load_tokenizer(new)
    assert t4("µGuru")["input_ids"] == [1, 8218, 61873, 2]  # "µ" -> Greek "μ" (NFKC), as transformers 4 gives
    assert load_tokenizer(old / "spm.model")("µGuru")["input_ids"] == [1, 8218, 61873, 2]  # its folder decides
    assert t5("µGuru")["input_ids"] == [1, 507, 3, 61873, 2]  # "▁" [UNK] "Guru", as transformers 5 gives
    assert t4("wait…")["input_ids"] == [1, 1495, 260, 260, 260, 2] and t5("wait…")["input_ids"] == [1, 1495, 3, 2]
    for text in load_split(get_task("sst2"), GLUE, "dev", limit=50):  # plain English: both agree
        assert t4(text.text_a)["input_ids"] == t5(text.text_a)["input_ids"]


def test_transformers4_normalization_survives_save_and_reload(tmp_path):
    """A transformers 4 checkpoint written again by debx (transformers 5) keeps the NFKC normalizer in tokenizer.json,
    so the reloaded tokenizer, and the C++ runtime reading the folder, still normalize as the model was trained."""
    from debx.tokenizer import checkpoint_normalization

    t4 = load_tokenizer(_checkpoint(tmp_path / "v4", "4.57.6"))
    save_tokenizer(t4, tmp_path / "again")
    assert checkpoint_normalization(tmp_path / "again")[0] == "transformers4"
    again = load_tokenizer(tmp_path / "again")
    assert [again(t)["input_ids"] for t in NFKC] == [t4(t)["input_ids"] for t in NFKC]
    assert 3 not in again("a ﬁne ﬁsh")["input_ids"]
