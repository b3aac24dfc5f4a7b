"""The C++ runtime's tokenizer (debx_tokenize, no TensorRT) against transformers' DebertaV2Tokenizer.

Real GLUE dev sentences, single and pair, with truncation, plus the corners where SentencePiece's own Encode() and
transformers disagree (NFKC, byte fallback, whitespace runs, special tokens written in the text).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import warnings
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


# ---- normalization chosen from the checkpoint (transformers 4 vs 5) -------------------------------------------------
# transformers 5's DebertaV2Tokenizer normalizes with NFC only; transformers 4's DebertaV2TokenizerFast runs the spm
# model's NFKC charsmap (tokenizer.json's Precompiled step). These texts tokenize differently under the two.
NFKC_TEXTS = ["µGuru microcontroller", "a ﬁne ﬁsh", "½ cup of sugar", "wait for it…", "Ｆｕｌｌ width", "㎏ ① ™ Ⅻ",
              "x\u200by", "a\u3000\u3000b", "ﬁ\u0301", "👨\u200d👩\u200d👧 family", "a [UNK] b", "ｶﾀｶﾅ", "ǆ Ǳ ﬀ"]
NORMALIZATION_TEXTS = NFKC_TEXTS + EDGE_TEXTS


def tool_ids(tool: Path, folder: Path, texts, pairs=False, explain=False):
    requests = [{"text": t} for t in texts]
    if pairs:
        requests += [{"text": a, "text_pair": b} for a, b in zip(texts, reversed(texts))]
    stdin = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in requests)
    proc = subprocess.run([str(tool), "--spm", str(folder), "--explain"], input=stdin, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line)["input_ids"] for line in proc.stdout.splitlines()], proc.stderr


@pytest.fixture(scope="module")
def checkpoint5(tmp_path_factory):
    """A tokenizer folder written by transformers 5's save_pretrained (debx.tokenizer.save_tokenizer: + spm.model)."""
    require(SPM.is_file(), f"{SPM} not found")
    from debx.tokenizer import save_tokenizer, spm_tokenizer

    folder = tmp_path_factory.mktemp("ckpt-transformers5")
    save_tokenizer(spm_tokenizer(SPM), folder)
    return folder


def test_transformers5_checkpoint_keeps_nfc(tokenizer_build, checkpoint5):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(checkpoint5))
    got, why = tool_ids(tokenizer_build, checkpoint5, NORMALIZATION_TEXTS, pairs=True)
    assert "normalization transformers5" in why and "tokenizer.json" in why
    texts = list(NORMALIZATION_TEXTS)
    want = [hf(t)["input_ids"] for t in texts] + [hf(a, b)["input_ids"] for a, b in zip(texts, reversed(texts))]
    assert got == want
    assert got[0] == hf("µGuru microcontroller")["input_ids"] and hf.unk_token_id in got[0]  # no NFKC: µ is unknown


def transformers4_folder(checkpoint5: Path, dest: Path) -> Path:
    """checkpoint5 with the normalizer transformers 4 writes into tokenizer.json: DebertaV2Converter's (strip, the
    spm model's precompiled charsmap, space runs), which transformers 5 still ships."""
    import transformers
    from transformers.convert_slow_tokenizer import DebertaV2Converter

    from debx.tokenizer import spm_tokenizer

    tok = spm_tokenizer(SPM)
    tok.vocab_file = str(SPM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "byte fallback is not implemented in the fast tokenizers": as in 4.x
        converted = json.loads(DebertaV2Converter(tok).converted().to_str())
    shutil.copytree(checkpoint5, dest)
    saved = json.loads((dest / "tokenizer.json").read_text())
    saved["normalizer"] = converted["normalizer"]
    (dest / "tokenizer.json").write_text(json.dumps(saved))
    assert transformers.__version__  # the converter above is transformers' own
    return dest


def test_transformers4_normalizer_in_tokenizer_json_applies_the_charsmap(tokenizer_build, checkpoint5, tmp_path):
    """A tokenizer.json with transformers 4's normalizer is run by the tokenizers library exactly as transformers 4's
    fast tokenizer runs it; the C++ tokenizer picks that normalization from the file and matches it, GLUE text too."""
    import tokenizers

    folder = transformers4_folder(checkpoint5, tmp_path / "ckpt4")
    reference = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    texts = NORMALIZATION_TEXTS + [r[0] for r in read_tsv(GLUE / "SST-2" / "dev.tsv", (0,), 300)]
    got, why = tool_ids(tokenizer_build, folder, texts)
    assert "normalization transformers4" in why and "Precompiled" in why
    want = [reference.encode(t).ids for t in texts]
    differ = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert not differ, f"{len(differ)} of {len(texts)} differ, first: {differ[0]}"
    assert got[0][:3] == [1, 8218, 61873]  # "µGuru": NFKC makes "µ" the Greek "μ", a known piece (no [UNK])


def side_transformers4() -> Path | None:
    from debx.bench import optimum_python

    py = optimum_python()
    if py is None:
        return None
    probe = subprocess.run([str(py), "-c", "import transformers; print(transformers.__version__)"],
                           capture_output=True, text=True, timeout=120)
    return py if probe.returncode == 0 and probe.stdout.strip().startswith("4.") else None


TRANSFORMERS4_SIDE = r"""
import json, shutil, sys
from pathlib import Path
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2TokenizerFast
spm, out, texts = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
DebertaV2TokenizerFast(vocab_file=spm).save_pretrained(out / "full")
DebertaV2Config(vocab_size=128100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                intermediate_size=37).save_pretrained(out / "full")
shutil.copytree(out / "full", out / "no_tokenizer_json")
(out / "no_tokenizer_json" / "tokenizer.json").unlink()
ids = {}
for name in ("full", "no_tokenizer_json"):
    tok = AutoTokenizer.from_pretrained(str(out / name))
    ids[name] = [tok(t)["input_ids"] for t in texts] + [tok(a, b)["input_ids"] for a, b in zip(texts, texts[::-1])]
print(json.dumps(ids))
"""


@pytest.mark.slow
def test_checkpoint_saved_by_transformers4_tokenizes_as_transformers4(tokenizer_build):
    """Checkpoints written by transformers 4.57's save_pretrained (in the Optimum side venv): with tokenizer.json, and
    with only spm.model + config.json (transformers_version 4.x). The C++ tokenizer matches transformers 4."""
    py = side_transformers4()
    if py is None:  # a skip in CI too: CI does not build the side venv (as tests/exporters/test_folder_target.py)
        pytest.skip("no transformers 4 side venv (bash scripts/optimum_env.sh makes .venv-optimum with transformers "
                    "4.57, or set DEBX_OPTIMUM_VENV)")
    require(SPM.is_file(), f"{SPM} not found")
    import tempfile

    with tempfile.TemporaryDirectory() as td:
        texts = list(NORMALIZATION_TEXTS)
        proc = subprocess.run([str(py), "-c", TRANSFORMERS4_SIDE, str(SPM), td, json.dumps(texts)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        want = json.loads(proc.stdout.strip().splitlines()[-1])
        sources = {"full": "tokenizer.json", "no_tokenizer_json": "config.json: written by transformers 4"}
        for name, source in sources.items():
            got, why = tool_ids(tokenizer_build, Path(td) / name, texts, pairs=True)
            assert "normalization transformers4" in why and source in why, why
            differ = [i for i, (g, w) in enumerate(zip(got, want[name])) if g != w]
            assert not differ, (name, len(differ), [(texts + texts)[i] for i in differ[:3]])
            # debx's Python side (load_tokenizer, under transformers 5) keeps the same normalization
            from debx.tokenizer import load_tokenizer

            tok = load_tokenizer(Path(td) / name)
            python = [tok(t)["input_ids"] for t in texts] + [tok(a, b)["input_ids"] for a, b in zip(texts, texts[::-1])]
            assert python == want[name], name
