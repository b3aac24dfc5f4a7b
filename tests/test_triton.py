"""`debx package --triton DIR`: the model repository's layout, its config.pbtxt files (parsed as protobuf text), and
the Python-backend tokenizer's `execute` on real requests through a stand-in of triton_python_backend_utils, whose
token ids then run through the repository's ONNX model and match debx's own runner."""

from __future__ import annotations

import importlib.util
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------------------------------
# protobuf text, parsed (the subset Triton configs use: messages, repeated fields, [lists], strings, numbers, enums)
# ---------------------------------------------------------------------------------------------------------------------

TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?)|(?P<id>[A-Za-z_][\w]*)|(?P<sym>[{}\[\]:,]))')


def tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        assert m and m.end() > pos, f"protobuf text: cannot read {text[pos:pos + 30]!r}"
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def parse(text: str) -> dict:
    toks = tokens(text)
    i = 0

    def value():
        nonlocal i
        kind, tok = toks[i]
        i += 1
        if kind == "str":
            return tok[1:-1]
        if kind == "num":
            return float(tok) if "." in tok else int(tok)
        assert kind == "id", f"unexpected {tok!r}"
        return {"true": True, "false": False}.get(tok, tok)

    def message(end: str | None) -> dict:
        nonlocal i
        out: dict = {}
        while i < len(toks) and toks[i][1] != end:
            kind, key = toks[i]
            assert kind == "id", f"expected a field name, got {key!r}"
            i += 1
            if toks[i][1] == ":":
                i += 1
                if toks[i][1] == "[":
                    i += 1
                    items = []
                    while toks[i][1] != "]":
                        items.append(value())
                        if toks[i][1] == ",":
                            i += 1
                    i += 1
                    v = items
                else:
                    v = value()
            else:
                assert toks[i][1] == "{", f"{key}: expected ':' or '{{'"
                i += 1
                v = message("}")
                i += 1
            out.setdefault(key, []).append(v)
        return out

    result = message(None)
    assert i == len(toks)
    return result


def one(msg: dict, key: str):
    assert len(msg[key]) == 1, key
    return msg[key][0]


# ---------------------------------------------------------------------------------------------------------------------
# a stand-in of the Python backend's utilities
# ---------------------------------------------------------------------------------------------------------------------


def stand_in_pb_utils() -> types.ModuleType:
    m = types.ModuleType("triton_python_backend_utils")

    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError(Exception):
        pass

    class InferenceResponse:
        def __init__(self, output_tensors, error=None):
            self.output_tensors, self.error = output_tensors, error

    class InferenceRequest:
        def __init__(self, inputs):
            self.inputs = inputs

    def get_input_tensor_by_name(request, name):
        return next((t for t in request.inputs if t.name() == name), None)

    m.Tensor, m.TritonError, m.InferenceResponse, m.InferenceRequest = Tensor, TritonError, InferenceResponse, \
        InferenceRequest
    m.get_input_tensor_by_name = get_input_tensor_by_name
    return m


def load_model_py(path: Path, pb_utils):
    sys.modules["triton_python_backend_utils"] = pb_utils
    try:
        spec = importlib.util.spec_from_file_location("debx_triton_tokenizer_model", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["triton_python_backend_utils"]
    return mod


# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def repo(tmp_path_factory, trained_like_checkpoints, glue_dir):
    from debx import export
    from debx.triton import TritonConfig, package_triton

    root = tmp_path_factory.mktemp("triton")
    res = export(trained_like_checkpoints["v3"], root / "sst2.debx.onnx", attention="debx", data_dir=glue_dir)
    out = package_triton(TritonConfig(model=res.output, output=root / "repo", name="sst2", max_batch_size=16,
                                      pad_to=64))
    return res, out


def test_layout(repo):
    _, out = repo
    files = sorted(str(p.relative_to(out.repository)) for p in out.repository.rglob("*") if p.is_file())
    assert {"sst2/config.pbtxt", "sst2_model/config.pbtxt", "sst2_model/1/model.onnx", "sst2_model/1/model.onnx.json",
            "sst2_tokenizer/config.pbtxt", "sst2_tokenizer/1/model.py"} <= set(files), files
    assert (out.repository / "sst2" / "1").is_dir()
    assert any(f.startswith("sst2_tokenizer/1/tokenizer/") for f in files)
    assert out.custom_ops and out.pad_to == 64


def test_configs_are_protobuf_text_with_the_right_io(repo):
    res, out = repo
    model = parse((out.repository / "sst2_model" / "config.pbtxt").read_text())
    assert one(model, "platform") == "onnxruntime_onnx" and one(model, "max_batch_size") == 16
    assert one(model, "name") == "sst2_model"
    ins = {one(i, "name"): (one(i, "data_type"), one(i, "dims")) for i in model["input"]}
    assert ins == {"input_ids": ("TYPE_INT64", [-1]), "attention_mask": ("TYPE_INT64", [-1])}
    outs = {one(o, "name"): (one(o, "data_type"), one(o, "dims")) for o in model["output"]}
    assert outs == {"logits": ("TYPE_FP32", [2])}
    assert "dynamic_batching" in model
    assert one(one(model, "model_operations"), "op_library_filename") == ["/opt/debx/lib/libdebx_ort_ops.so"]

    tok = parse((out.repository / "sst2_tokenizer" / "config.pbtxt").read_text())
    assert one(tok, "backend") == "python"
    assert {one(o, "name"): one(o, "dims") for o in tok["output"]} == {"input_ids": [64], "attention_mask": [64]}

    ens = parse((out.repository / "sst2" / "config.pbtxt").read_text())
    assert one(ens, "platform") == "ensemble"
    steps = one(ens, "ensemble_scheduling")["step"]
    assert [one(s, "model_name") for s in steps] == ["sst2_tokenizer", "sst2_model"]
    produced = {one(m, "value") for m in steps[0]["output_map"]}
    consumed = {one(m, "value") for m in steps[1]["input_map"]}
    assert consumed <= produced
    assert {one(o, "name") for o in ens["output"]} == {"logits"}


def test_python_backend_execute_on_real_requests(repo, glue_dir):
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner
    from debx.tasks import load_split

    res, out = repo
    pb = stand_in_pb_utils()
    mod = load_model_py(out.repository / "sst2_tokenizer" / "1" / "model.py", pb)
    model = mod.TritonPythonModel()
    model.initialize({"model_repository": str(out.repository / "sst2_tokenizer"), "model_version": "1"})
    rows = [e.text_a for e in load_split("sst2", glue_dir, "dev", limit=7)]
    requests = [pb.InferenceRequest([pb.Tensor("TEXT", np.array([[t.encode()] for t in rows[:5]], dtype=object))]),
                pb.InferenceRequest([pb.Tensor("TEXT", np.array([[t.encode()] for t in rows[5:]], dtype=object))])]
    responses = model.execute(requests)
    assert len(responses) == 2 and all(r.error is None for r in responses)
    feeds = {t.name(): t.as_numpy() for t in responses[0].output_tensors}
    feeds2 = {t.name(): t.as_numpy() for t in responses[1].output_tensors}
    assert set(feeds) == {"input_ids", "attention_mask"}
    assert feeds["input_ids"].shape == (5, 64) and feeds2["input_ids"].shape == (2, 64)
    assert feeds["input_ids"].dtype == np.int64
    batch = {k: np.concatenate([feeds[k], feeds2[k]]) for k in feeds}

    from debx import load_runner

    with OnnxRuntimeRunner(out.repository / "sst2_model" / "1" / "model.onnx") as served, \
            load_runner(res.output) as ours:
        got = served.infer(batch)["logits"]
        want = ours.predict(rows)
    np.testing.assert_allclose(got, want, atol=1e-4)

    bad, good = model.execute([pb.InferenceRequest([]), requests[1]])
    assert "no TEXT input" in str(bad.error)  # a bad request is answered with its error, not an exception
    assert good.error is None and len(good.output_tensors) == 2


def test_refusals(repo, tmp_path):
    from debx.errors import ConfigError
    from debx.triton import TritonConfig, package_triton

    res, _ = repo
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a debx repository"):
        package_triton(TritonConfig(model=res.output, output=tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").is_file()
    with pytest.raises(ConfigError, match="--max-batch-size"):
        TritonConfig(model=res.output, output=tmp_path / "r", max_batch_size=0)
    with pytest.raises(ConfigError, match="exceeds the export's max_seq_len"):
        package_triton(TritonConfig(model=res.output, output=tmp_path / "r", pad_to=10_000))


def test_cli(repo, tmp_path, monkeypatch, capsys):
    from debx.cli import main

    res, _ = repo

    def debx(*args):
        monkeypatch.setattr(sys, "argv", ["debx", *map(str, args)])
        with pytest.raises(SystemExit) as e:
            main()
        out = capsys.readouterr()
        return e.value.code or 0, out.out, out.err

    code, out, err = debx("package", res.output, "--triton", tmp_path / "repo", "--name", "m")
    assert code == 0, err
    assert out.startswith(f"wrote {tmp_path / 'repo'}: m, m_tokenizer, m_model (rows padded to 128 tokens; op library")
    assert parse((tmp_path / "repo" / "m_model" / "config.pbtxt").read_text())
    code, _, err = debx("package", res.output, "--triton", tmp_path / "repo", "--name", "bad name")
    assert code == 2 and err.startswith("debx: error: --name 'bad name'") and err.count("\n") == 1
    code, _, err = debx("package", tmp_path / "missing.onnx", "--triton", tmp_path / "r2")
    assert code == 2 and "no such ONNX file" in err and not (tmp_path / "r2").exists()
