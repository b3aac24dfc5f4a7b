"""`debx export CKPT -o DIR/`: a folder Optimum loads (model.onnx + config.json + tokenizer files + the debx
sidecar), committed as one unit; `--optimum-axes` names the dynamic axes as Optimum does. The Optimum check itself
runs in the Optimum side venv (scripts/optimum_env.sh) and is skipped with the reason where that venv is absent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from debx.checkpoint import TOKENIZER_FILES
from debx.exporters.export import portable_tokenizer_config
from cli_helpers import run_main as main  # noqa: E402 (tests/ is on sys.path)

ROOT = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, OMP_NUM_THREADS="1")




def axis_names(path: Path) -> dict[str, list]:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.input, *g.output]}


def test_folder_target_layout_and_optimum_axes(tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    ckpt = tiny_checkpoints["v3"]
    out = tmp_path / "sst2-onnx"
    code, stdout, err = main(monkeypatch, capsys, "export", ckpt, "-o", f"{out}/", "--optimum-axes",
                             "--data-dir", glue_dir)
    assert code == 0, err
    tokenizer = sorted(n for n in TOKENIZER_FILES if (ckpt / n).is_file())
    assert tokenizer, "the fixture checkpoint has tokenizer files"
    assert sorted(p.name for p in out.iterdir()) == sorted(["model.onnx", "model.onnx.json", "config.json",
                                                            *tokenizer])
    for name in ["config.json", *tokenizer]:
        if name != "tokenizer_config.json":
            assert (out / name).read_bytes() == (ckpt / name).read_bytes(), name
    # tokenizer_config.json is rewritten for transformers 4.x (Optimum's) and still tokenizes the same in 5.x
    assert not isinstance(json.loads((out / "tokenizer_config.json").read_text()).get("extra_special_tokens"), list)
    from transformers import AutoTokenizer

    text = ["a [SEP] pair of words", "Hello, world! ½ ﬁne"]
    assert AutoTokenizer.from_pretrained(out)(text)["input_ids"] == AutoTokenizer.from_pretrained(ckpt)(text)["input_ids"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder left behind"
    side = json.loads((out / "model.onnx.json").read_text())
    assert side["folder"]["files"] == ["config.json", *[n for n in TOKENIZER_FILES if n in tokenizer]]
    assert side["shapes"]["axis_names"] == ["batch_size", "sequence_length"]
    axes = axis_names(out / "model.onnx")
    assert axes["input_ids"] == ["batch_size", "sequence_length"]
    assert axes["attention_mask"] == ["batch_size", "sequence_length"]
    assert axes["logits"][0] == "batch_size"
    assert "model.onnx" in stdout and "config.json" in stdout
    # debx validate reads the axis names from the sidecar
    code, stdout, err = main(monkeypatch, capsys, "validate", out / "model.onnx", "--data-dir", glue_dir)
    assert code == 0, err + stdout


def test_existing_folder_is_a_folder_target_and_default_axes(tmp_path, tiny_checkpoints, glue_dir, monkeypatch,
                                                             capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # a user's file in the folder is left alone
    code, _, err = main(monkeypatch, capsys, "export", tiny_checkpoints["v1"], "-o", out, "--data-dir", glue_dir)
    assert code == 0, err
    assert (out / "model.onnx").is_file() and (out / "config.json").is_file()
    assert (out / "notes.txt").read_text() == "mine"
    assert axis_names(out / "model.onnx")["input_ids"] == ["batch", "sequence"]


@pytest.mark.parametrize("case, message", [
    ("file", "is a file, expected a folder"),
    ("checkpoint", "is the checkpoint folder itself"),
    ("suffix", "must end in .onnx (or name a folder"),
])
def test_folder_target_refusals(case, message, tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    ckpt = tiny_checkpoints["v1"]
    target = {"file": f"{tmp_path / 'f'}/", "checkpoint": f"{ckpt}/", "suffix": str(tmp_path / "model.bin")}[case]
    if case == "file":
        (tmp_path / "f").write_text("x")
    before = sorted(p.name for p in ckpt.iterdir())
    code, _, err = main(monkeypatch, capsys, "export", ckpt, "-o", target, "--data-dir", glue_dir)
    assert code == 2 and err.startswith("debx: error:") and message in err, err
    assert sorted(p.name for p in ckpt.iterdir()) == before


def test_broken_tokenizer_config_is_one_line(tmp_path, tiny_checkpoints, glue_dir, monkeypatch, capsys):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoints["v1"], ckpt)
    (ckpt / "tokenizer_config.json").write_text('{"pad_token": ')
    out = tmp_path / "out"
    code, _, err = main(monkeypatch, capsys, "export", ckpt, "-o", f"{out}/", "--data-dir", glue_dir)
    assert code == 2 and err.startswith("debx: error: ") and "tokenizer_config.json: invalid JSON" in err, err
    assert not out.exists() or not list(out.iterdir())


def test_portable_tokenizer_config():
    five = {"pad_token": "[PAD]", "cls_token": "[CLS]", "extra_special_tokens": ["[PAD]", "[CLS]", "<x>"]}
    assert portable_tokenizer_config(five) == {"pad_token": "[PAD]", "cls_token": "[CLS]",
                                               "additional_special_tokens": ["<x>"]}
    four = {"pad_token": "[PAD]", "extra_special_tokens": {"image_token": "<img>"}}
    assert portable_tokenizer_config(four) == four


def optimum_python() -> Path | None:
    from debx.bench import optimum_python as find

    try:
        return Path(find())
    except Exception:
        return None



ROWS = 200


@pytest.mark.slow
def test_optimum_loads_the_folder_and_agrees_with_debx_eval(tmp_path, trained_like_checkpoints, glue_dir,
                                                            monkeypatch, capsys):
    py = optimum_python()
    if py is None or not py.is_file():
        pytest.skip("no Optimum side venv: run bash scripts/optimum_env.sh (or set DEBX_OPTIMUM_VENV)")
    out = tmp_path / "folder"
    code, _, err = main(monkeypatch, capsys, "export", trained_like_checkpoints["v3"], "-o", f"{out}/",
                        "--optimum-axes", "--data-dir", glue_dir)
    assert code == 0, err
    # the user's check, as the README runs it: Optimum's class + pipeline() on the folder vs debx eval, row by row
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "optimum_check.py"), str(out), "--limit", str(ROWS),
                        "--data-dir", str(glue_dir)], capture_output=True, text=True, env=ENV, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]  # exit 1: a prediction differs beyond an exact tie
    assert "pipeline()" in p.stdout and "'label'" in p.stdout and "'score'" in p.stdout, p.stdout
    assert f"sst2 dev, {ROWS} rows" in p.stdout and "predictions differing" in p.stdout, p.stdout
