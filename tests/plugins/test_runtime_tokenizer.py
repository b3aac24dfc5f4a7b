"""The C++ runtime's tokenizer (debx_tokenize, no TensorRT) against transformers' DebertaV2Tokenizer.

Real GLUE dev sentences, single and pair, with truncation, plus the corners where SentencePiece's own Encode() and
transformers disagree (NFKC, byte fallback, whitespace runs, special tokens written in the text).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from plugin_helpers import SHARED, SPM, require

GLUE = Path(os.environ.get("GLUE_DIR", SHARED / "glue"))


@pytest.fixture(scope="module")
def hf_tokenizer():
    require(SPM.is_file(), f"{SPM} not found")
    from transformers import DebertaV2Tokenizer

    return DebertaV2Tokenizer.from_pretrained(str(SPM.parent))


def read_tsv(path: Path, columns: tuple[int, ...], limit: int) -> list[tuple[str, ...]]:
    require(path.is_file(), f"{path} not found")
    rows = []
    for line in path.read_text(encoding="utf-8-sig").split("\n")[1:]:
        if not line:
            continue
        parts = line.split("\t")
        rows.append(tuple(parts[c] for c in columns))
        if len(rows) == limit:
            break
    return rows


def run_tool(tool: Path, requests: list[dict], *args: str) -> list[dict]:
    stdin = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    proc = subprocess.run([str(tool), "--spm", str(SPM), *args], input=stdin, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(requests)
    return [json.loads(line) for line in lines]


def assert_same(tool_rows, hf_rows, requests):
    mismatches = [(r, t["input_ids"], h["input_ids"]) for r, t, h in zip(requests, tool_rows, hf_rows)
                  if t != h]
    assert not mismatches, f"{len(mismatches)} of {len(requests)} differ, first: {mismatches[0]}"


def hf_encode(tok, requests, max_length):
    out = []
    for r in requests:
        e = tok(r["text"], r.get("text_pair"), truncation=True, max_length=max_length)
        out.append({"input_ids": e["input_ids"], "token_type_ids": e["token_type_ids"],
                    "attention_mask": e["attention_mask"]})
    return out


def test_glue_pairs_with_truncation(tokenizer_build, hf_tokenizer):
    rows = (read_tsv(GLUE / "RTE" / "dev.tsv", (1, 2), 150) + read_tsv(GLUE / "MRPC" / "dev.tsv", (3, 4), 150)
            + read_tsv(GLUE / "STS-B" / "dev.tsv", (7, 8), 100))
    requests = [{"text": a, "text_pair": b} for a, b in rows]
    for max_length in (512, 64, 23):  # 64 and 23 truncate many RTE premises and both sides of long pairs
        tool = run_tool(tokenizer_build, requests, "--max-length", str(max_length))
        assert_same(tool, hf_encode(hf_tokenizer, requests, max_length), requests)
    assert any(len(t["input_ids"]) == 23 for t in tool)


def test_glue_single_sentences(tokenizer_build, hf_tokenizer):
    rows = read_tsv(GLUE / "SST-2" / "dev.tsv", (0,), 300) + read_tsv(GLUE / "CoLA" / "dev.tsv", (3,), 300)
    requests = [{"text": r[0]} for r in rows]
    for max_length in (512, 12):
        tool = run_tool(tokenizer_build, requests, "--max-length", str(max_length))
        assert_same(tool, hf_encode(hf_tokenizer, requests, max_length), requests)


EDGE_TEXTS = [
    "", "   ", "a  b", " leading", "trailing ", "tab\there", "line\nbreak", "a\r\nb", "naïve café", "e\u0301te\u0301",
    "ｆｕｌｌｗｉｄｔｈ", "µGuru microcontroller", "Iraqâ\x80\x99s interim government", "emoji 😀 ok", "a\u00a0b",
    "a\u00a0\u00a0b", "a\u3000\u3000b", "a\u2028\u2028b", "a \x85b", "a\u3000", "x<0x41>y", "a [SEP] b", "a[SEP]b",
    "[CLS]", "a [MASK] b", "a[UNK]b", "µµ ab", "Déjà vu, ça va?", "日本語のテキスト", "Ελληνικά κείμενα",
    "a\x00b", "\x00", "x \x00 y", "a\x00\x00b c", "e\u0301\x00te\u0301",  # U+0000 is text, not the end
]


def test_corner_cases(tokenizer_build, hf_tokenizer):
    requests = [{"text": t} for t in EDGE_TEXTS] + [{"text": a, "text_pair": b}
                                                    for a, b in zip(EDGE_TEXTS, reversed(EDGE_TEXTS))]
    tool = run_tool(tokenizer_build, requests)
    assert_same(tool, hf_encode(hf_tokenizer, requests, 512), requests)


def test_batches_are_padded_like_transformers(tokenizer_build, hf_tokenizer):
    rows = read_tsv(GLUE / "MRPC" / "dev.tsv", (3, 4), 10)
    requests = [{"text": a, "text_pair": b} for a, b in rows[:5]] + [{"text": a} for a, _ in rows[5:]]
    tool = run_tool(tokenizer_build, requests, "--batch-size", "4", "--max-length", "128")
    for start in range(0, len(requests), 4):
        chunk = requests[start:start + 4]
        texts = [r["text"] for r in chunk]
        if all("text_pair" in r for r in chunk):
            want = hf_tokenizer(texts, [r["text_pair"] for r in chunk], padding=True, truncation=True,
                                max_length=128)
        elif not any("text_pair" in r for r in chunk):
            want = hf_tokenizer(texts, padding=True, truncation=True, max_length=128)
        else:  # mixed batch: encode separately, pad to the longest, as the runtime does
            singles = [hf_tokenizer(r["text"], r.get("text_pair"), truncation=True, max_length=128) for r in chunk]
            longest = max(len(s["input_ids"]) for s in singles)
            want = {k: [s[k] + [0] * (longest - len(s[k])) for s in singles]
                    for k in ("input_ids", "token_type_ids", "attention_mask")}
        for row, got in enumerate(tool[start:start + 4]):
            for key in ("input_ids", "token_type_ids", "attention_mask"):
                assert got[key] == want[key][row], (start + row, key)


def test_bad_lines_get_an_error_reply_in_place(tokenizer_build):
    stdin = '{"text": "fine"}\nnot json\n{"text": 3}\n{"text": "a", "text_pair": null}\n'
    proc = subprocess.run([str(tokenizer_build), "--spm", str(SPM)], input=stdin, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0
    replies = [json.loads(x) for x in proc.stdout.splitlines()]
    assert "input_ids" in replies[0] and "input_ids" in replies[3]
    assert replies[1] == {"error": "line is not valid JSON"}
    assert replies[2] == {"error": "\"text\" must be a string"}


def test_missing_model_is_one_clear_line(tokenizer_build, tmp_path):
    proc = subprocess.run([str(tokenizer_build), "--spm", str(tmp_path / "nope.model")], input="", capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("debx_tokenize: error:") and len(proc.stderr.strip().splitlines()) == 1
