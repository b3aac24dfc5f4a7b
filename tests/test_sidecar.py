"""The sidecar (`model.onnx.json`): one typed Sidecar with one reader and one writer in debx.artifacts, every old
spelling still read, unknown entries kept, and checks of the source tree that nothing else reads or writes one and
that nothing but debx.artifacts moves files into place (issue 13, "shared facts with no owner")."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from debx.artifacts import Sidecar, Source, artifact_source, read_sidecar, sidecar_path, write_sidecar
from debx.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

EXPORT_SIDECAR = {
    "format": "debx-onnx/1", "file": "m.onnx", "external_data": None,
    "source": {"checkpoint": "/runs/sst2", "fingerprint": "0123456789abcdef", "model_type": "deberta-v2"},
    "variant": "v3", "head": "classification", "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"],
    "opset": 17, "attention": "debx", "precision": "fp32", "keep_fp32": [],
    "shapes": {"batch": "dynamic", "sequence": "dynamic", "max_seq_len": 128}, "gi_max_scope": None,
    "parity": None, "created": "2026-11-25T10:00:00+00:00",
    "a_key_from_a_newer_debx": {"nested": [1, 2, {"x": None}]},
}


def test_round_trip_keeps_every_entry_and_its_order(tmp_path):
    model = tmp_path / "m.onnx"
    sidecar_path(model).write_text(json.dumps(EXPORT_SIDECAR))
    side = read_sidecar(model)
    assert isinstance(side, Sidecar) and side.format == "debx-onnx/1" and side.precision == "fp32"
    assert side.source == Source(Path("/runs/sst2"), "0123456789abcdef") and side.source.model_type == "deberta-v2"
    assert side.max_seq_len == 128 and side.extra["a_key_from_a_newer_debx"] == {"nested": [1, 2, {"x": None}]}
    assert side.get("opset") == 17 and side["attention"] == "debx" and "parity" in side and side == EXPORT_SIDECAR
    # written back (the one writer) and read again: the same JSON object, entries in the same order
    out = tmp_path / "copy.onnx"
    assert write_sidecar(out, side) == tmp_path / "copy.onnx.json"
    back = json.loads((tmp_path / "copy.onnx.json").read_text())
    assert back == EXPORT_SIDECAR and list(back) == list(EXPORT_SIDECAR)
    assert read_sidecar(out) == side
    # a changed field is written; a plain dict goes through the same writer
    side.precision = "int8"
    side.rewrites.append({"name": "fold_matmul_bias", "changed": 3})
    write_sidecar(out, side)
    back = json.loads((tmp_path / "copy.onnx.json").read_text())
    assert back["precision"] == "int8" and back["rewrites"] == [{"name": "fold_matmul_bias", "changed": 3}]
    write_sidecar(out, {"format": "debx-plan/1", "builder_flags": ["FP16"]})
    assert json.loads((tmp_path / "copy.onnx.json").read_text()) == {"format": "debx-plan/1", "builder_flags": ["FP16"]}


@pytest.mark.parametrize("entry, expected", [
    ({"checkpoint": "/ck", "fingerprint": "abc"}, Source(Path("/ck"), "abc")),  # export (and carried over)
    ({"path": "/tok"}, Source(Path("/tok"), None)),  # calibrate --tokenizer before this change
    ({"path": "/tok", "fingerprint": "abc"}, Source(Path("/tok"), "abc")),
    ("/ck", Source(Path("/ck"), None)),  # a plain string
])
def test_old_sidecars_on_disk_are_read_and_written_back_in_the_current_spelling(tmp_path, entry, expected):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    sidecar_path(model).write_text(json.dumps({"precision": "int8", "source": entry}))
    side = read_sidecar(model)
    assert side.source == expected and artifact_source(model) == expected
    assert artifact_source(model, json.loads(sidecar_path(model).read_text())) == expected  # an already-read dict
    write_sidecar(model, side)
    written = json.loads(sidecar_path(model).read_text())["source"]
    assert "path" not in written and written["checkpoint"] == str(expected.checkpoint)


def test_no_sidecar_is_an_empty_one_and_a_folder_has_none(tmp_path):
    assert read_sidecar(tmp_path / "m.onnx") == {} and not read_sidecar(tmp_path / "m.onnx")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt.json").write_text("not a sidecar")  # e.g. a report beside a checkpoint folder
    assert read_sidecar(tmp_path / "ckpt") == {} and artifact_source(tmp_path / "ckpt") == Source(None, None)


@pytest.mark.parametrize("text, message", [
    ("{not json", r"m\.onnx\.json: invalid JSON"),
    ("[1, 2]", r"m\.onnx\.json: not a JSON object"),
    ('{"shapes": [128]}', r"m\.onnx\.json: entry 'shapes' must be a JSON object"),
    ('{"external_data": 5}', r"m\.onnx\.json: entry 'external_data' must be a string"),
])
def test_a_broken_sidecar_is_one_line_naming_the_file(tmp_path, text, message):
    model = tmp_path / "m.onnx"
    sidecar_path(model).write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        read_sidecar(model)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_replacing_an_artifact_with_a_broken_sidecar_still_works(tmp_path):
    """The files of the artifact being replaced are found without its (broken) sidecar: the legacy data file."""
    from debx.artifacts import input_files, previous_onnx_data

    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    sidecar_path(model).write_text("{broken")
    assert previous_onnx_data(model) == [tmp_path / "m.onnx.data"]
    assert tmp_path / "m.onnx.json" in input_files(model)


# ---- the rule: nothing but debx.artifacts reads or writes a sidecar -------------------------------------------------

JSON_CALLS = {"json.load", "json.loads", "json.dump", "json.dumps", "write_json_atomic", "write_bytes_atomic"}
FILE_CALLS = {"read_text", "read_bytes", "write_text", "write_bytes", "open"}


def sidecar_violations(source: str, name: str = "<source>") -> list[str]:
    """Places in `source` that read or write a sidecar by hand: a sidecar path spelled out (`x + ".json"`,
    f"{x}.json"), JSON (de)serialisation of something named side/sidecar, or file I/O on sidecar_path(...)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and isinstance(node.right, ast.Constant) \
                and isinstance(node.right.value, str) and node.right.value.endswith(".json"):
            out.append(f"{where}: a sidecar path spelled out ({ast.unparse(node)}); use debx.artifacts.sidecar_path")
        if isinstance(node, ast.JoinedStr) and len(node.values) >= 2 \
                and isinstance(node.values[-2], ast.FormattedValue) and isinstance(node.values[-1], ast.Constant) \
                and node.values[-1].value in (".json", ".onnx.json", ".plan.json"):
            out.append(f"{where}: a sidecar path spelled out ({ast.unparse(node)}); use debx.artifacts.sidecar_path")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            args = " ".join(ast.unparse(a) for a in [*node.args, *(k.value for k in node.keywords)])
            if func in JSON_CALLS or func.split(".")[-1] in JSON_CALLS:
                if "sidecar" in args or any(isinstance(n, ast.Name) and n.id.startswith("side")
                                            for a in node.args for n in ast.walk(a)):
                    out.append(f"{where}: {func}({args[:60]}) reads or writes a sidecar; use read_sidecar / "
                               "write_sidecar (debx.artifacts)")
            if isinstance(node.func, ast.Attribute) and node.func.attr in FILE_CALLS \
                    and "sidecar_path(" in ast.unparse(node.func.value):
                out.append(f"{where}: {func}() on a sidecar; use read_sidecar / write_sidecar (debx.artifacts)")
            if func in ("open", "shutil.copyfile", "shutil.copy", "shutil.copy2") and "sidecar_path(" in args:
                out.append(f"{where}: {func}({args[:60]}) on a sidecar; use read_sidecar / write_sidecar")
    return out


def test_the_rule_catches_hand_written_sidecar_io():
    bad = '''
side = json.loads(out.with_name(out.name + ".json").read_text())
path.with_name(f"{path.name}.json").write_text(json.dumps(sidecar))
write_json_atomic(st.add(sidecar_path(out)), meta)
sidecar_path(model).read_text()
shutil.copyfile(sidecar_path(a), b)
'''
    found = sidecar_violations(bad)
    assert len(found) == 6, found
    assert not sidecar_violations('report = json.loads(Path(p).read_text())\nranges = p.name + ".ranges"\n')


def test_only_debx_artifacts_reads_or_writes_sidecars():
    allowed = {ROOT / "debx" / "artifacts.py"}
    found = []
    for pkg in ("debx", "exporters", "calib"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            if f not in allowed:
                found += sidecar_violations(f.read_text(), str(f.relative_to(ROOT)))
                found += [f"{f.relative_to(ROOT)}:{n.lineno}: {n.name}() is a second sidecar reader/writer"
                          for n in ast.walk(ast.parse(f.read_text()))
                          if isinstance(n, ast.FunctionDef) and n.name.strip("_") in ("read_sidecar", "write_sidecar")]
    assert not found, "\n".join(found)
    # and debx.artifacts has one reader and one writer
    tree = ast.parse((ROOT / "debx" / "artifacts.py").read_text())
    names = [n.name for n in tree.body if isinstance(n, ast.FunctionDef) and "sidecar" in n.name]
    assert sorted(names) == ["read_sidecar", "sidecar_bytes", "sidecar_path", "write_sidecar"]


# ---- the rule: files are put in place by debx.artifacts only (write_*_atomic, atomic_dir, publish) ----------------

RENAMES = {"os.replace", "os.rename", "shutil.move"}
# not yet through debx.artifacts: the native library's build cache (the library and its digest, digest first), which
# the native build owns
RENAMES_ELSEWHERE = {"debx/runtimes/native_ops.py"}


def renames(source: str, name: str = "<source>") -> list[str]:
    """Calls that move a file into place by hand (os.replace / os.rename / shutil.move / Path.rename)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in RENAMES or (isinstance(node.func, ast.Attribute) and node.func.attr == "rename"):
                out.append(f"{name}:{node.lineno}: {func}(...): stage and commit with debx.artifacts (publish, "
                           "atomic_dir, write_bytes_atomic) instead")
    return out


def test_only_debx_artifacts_moves_files_into_place():
    assert len(renames("os.replace(a, b)\nPath(a).rename(b)\nshutil.move(a, b)\n")) == 3
    found = []
    for pkg in ("debx", "exporters", "calib"):
        for f in sorted((ROOT / pkg).rglob("*.py")):
            rel = str(f.relative_to(ROOT))
            if rel != "debx/artifacts.py" and rel not in RENAMES_ELSEWHERE:
                found += renames(f.read_text(), rel)
    assert not found, "\n".join(found)
