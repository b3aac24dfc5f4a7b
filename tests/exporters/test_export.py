"""`debx.exporters.export`: every variant in every attention mode it supports, FP32 and FP16, validated against PyTorch;
the graph rules; the sidecar; atomic writes and clean refusals."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from debx.checkpoint import fingerprint, load_model
from debx.errors import CheckpointError, ConfigError
from debx.runtimes.reference_ops import DEBX_DOMAIN, DEBX_OP, TRT_OP
from debx.variants import VARIANTS
from debx.exporters.attention import MODES, supported_modes
from debx.exporters.export import ExportConfig, export_onnx
from debx.exporters.validate import ValidationFailed

SUPPORTED = {"v1": ("onnx", "debx", "fast"), "v2": ("onnx", "debx", "fast"), "v3": MODES, "mdeberta": MODES, "gimlp": MODES}
MATRIX = [(v, m, p) for v in VARIANTS for m in MODES for p in (False, True)]


def _graph(res) -> onnx.ModelProto:
    return onnx.load(str(res.output))


def test_supported_modes_are_the_expected_ones(tiny_checkpoints):
    assert set(SUPPORTED) == set(VARIANTS), "list the attention modes of the new variant here"
    for name, path in tiny_checkpoints.items():
        assert supported_modes(load_model(path)[1].config) == SUPPORTED[name]


@pytest.mark.parametrize("variant, mode, fp16", MATRIX, ids=[f"{v}-{m}-{'fp16' if p else 'fp32'}" for v, m, p in MATRIX])
def test_every_variant_exports_and_validates(exported, tmp_path, tiny_checkpoints, variant, mode, fp16):
    if mode not in SUPPORTED[variant]:
        out = tmp_path / "refused.onnx"
        with pytest.raises(ConfigError, match="DisentangledAttention_TRT"):
            export_onnx(ExportConfig(tiny_checkpoints[variant], out, attention=mode, fp16=fp16))
        assert not out.exists() and not list(tmp_path.iterdir())
        return
    res = exported(variant, mode, fp16)
    rep = res.report
    assert rep.ok and rep.precision == ("fp16" if fp16 else "fp32") and rep.attention == mode
    assert rep.max_abs_diff <= (2e-2 if fp16 else 1e-4)
    assert rep.argmax_agreement >= (0.995 if fp16 else 1.0)
    shapes = {c["case"]: (c["batch"], c["seq"]) for c in rep.cases}
    assert shapes["1 token"] == (1, 1) and shapes["short sentence"][0] == 1
    assert shapes["pairs with padding"][0] == 4 and shapes["maximum length with padding"] == (2, 128)
    longest = max(c["seq"] for c in rep.cases)
    assert longest == 128  # the model limit: relative positions computed in-graph up to it
    assert res.output.is_file() and res.sidecar.is_file()


# ---------------------------------------------------------------------------------------------------------------------
# What the graph holds
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant, mode", [("v1", "onnx"), ("v2", "debx"), ("v3", "trt"), ("gimlp", "debx")])
def test_graph_rules(exported, variant, mode):
    from debx.exporters.checks import _elem_types

    for fp16 in (False, True):
        g = _graph(exported(variant, mode, fp16))
        ops = Counter(n.op_type for n in g.graph.node)
        assert not {"If", "Loop", "Scan"} & set(ops)
        types = _elem_types(g)
        assert onnx.TensorProto.UINT8 not in types.values()
        bool_casts = [n for n in g.graph.node if n.op_type == "Cast" and types.get(n.input[0]) == onnx.TensorProto.BOOL]
        assert not bool_casts, "no bool -> number mask arithmetic"
        where_fill = [n for n in g.graph.node if n.op_type == "Where"]
        assert mode == "debx" or where_fill, "masks select with Where"
        for vi in list(g.graph.input) + list(g.graph.output):
            dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
            assert dims[0] == "batch"
            if vi.name != "logits":
                assert dims[1] == "sequence"
        assert {i.name: i.type.tensor_type.elem_type for i in g.graph.input} == {
            n: onnx.TensorProto.INT64 for n in ["input_ids", "attention_mask"] + (["token_type_ids"] if variant == "v2" else [])}
        assert g.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 out even for --fp16


@pytest.mark.parametrize("variant, mode", [("v1", "debx"), ("v3", "debx"), ("v3", "trt"), ("v3", "onnx")])
def test_position_tables_are_folded_into_initializers(exported, tiny_checkpoints, variant, mode):
    cfg = load_model(tiny_checkpoints[variant])[1].config
    g = _graph(exported(variant, mode))
    inits = {t.name: tuple(t.dims) for t in g.graph.initializer}
    assert not any("rel_embeddings" in n for n in inits), "raw relative embeddings must not reach the graph"
    ln = sum(n.op_type == "LayerNormalization" for n in g.graph.node)
    assert ln == 1 + 2 * cfg.num_hidden_layers, "no LayerNorm on the relative embeddings at run time"
    if 2 * cfg.span != cfg.hidden_size:  # (P, HD) is not also the shape of a weight matrix
        tables = [n for n, shape in inits.items() if shape == (2 * cfg.span, cfg.hidden_size)]
        assert len(tables) == 2 * cfg.num_hidden_layers, "one key-side and one query-side table per layer"
    if mode != "onnx":  # the onnx mode folds the attention scale into the query-side table, so it is renamed
        for i in range(cfg.num_hidden_layers):
            for side in ("pos_key_table", "pos_query_table"):
                assert f"deberta.encoder.layer.{i}.attention.self.{side}" in inits


def test_debx_node_follows_the_op_spec(exported, tiny_checkpoints):
    cfg = load_model(tiny_checkpoints["v3"])[1].config
    g = _graph(exported("v3", "debx"))
    nodes = [n for n in g.graph.node if n.op_type == DEBX_OP]
    assert len(nodes) == cfg.num_hidden_layers and all(n.domain == DEBX_DOMAIN for n in nodes)
    assert any(o.domain == DEBX_DOMAIN and o.version == 1 for o in g.opset_import)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == pytest.approx({"num_heads": 4, "scale": 1 / math.sqrt(8 * 3), "span": 64, "position_buckets": 64,
                                   "max_relative_positions": 128, "c2p": 1, "p2c": 1})
    inferred = onnx.shape_inference.infer_shapes(g)
    types = {vi.name: vi.type.tensor_type for vi in [*inferred.graph.value_info, *inferred.graph.input]}
    inits = {t.name: t for t in g.graph.initializer}
    n = nodes[0]
    assert types[n.input[5]].elem_type == onnx.TensorProto.INT32  # mask
    assert [tuple(inits[n.input[i]].dims) for i in (3, 4)] == [(128, 32), (128, 32)]  # folded (P, HD) tables
    v1 = load_model(tiny_checkpoints["v1"])[1].config
    attrs1 = {a.name: onnx.helper.get_attribute_value(a) for a in
              next(n for n in _graph(exported("v1", "debx")).graph.node if n.op_type == DEBX_OP).attribute}
    assert attrs1["position_buckets"] == 0 and attrs1["span"] == v1.max_relative == 16


def test_trt_node_is_what_tensorrt_parses(exported):
    g = _graph(exported("v3", "trt"))
    nodes = [n for n in g.graph.node if n.op_type == TRT_OP]
    assert len(nodes) == 2 and all(n.domain == "" for n in nodes)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs["span"] == 64 and attrs["factor"] == pytest.approx(1 / math.sqrt(24))
    assert attrs["plugin_version"] == b"1" and attrs["plugin_namespace"] == b""
    assert 0 < attrs["factor"] < 1  # the plugin's creator rejects anything else
    # run the graph up to the node's inputs and check the documented shapes (B*H, N, N), (B*H, N, 2k) x2
    from debx.runtimes.onnxruntime import session_for_model

    probe = onnx.ModelProto()
    probe.CopyFrom(g)
    for name in nodes[0].input:
        probe.graph.output.append(onnx.ValueInfoProto(name=name))
    sess = session_for_model(probe)
    ids = np.array([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0], [1, 9, 2, 0, 0]], dtype=np.int64)
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})))
    assert [outs[n].shape for n in nodes[0].input] == [(12, 5, 5), (12, 5, 128), (12, 5, 128)]


# ---------------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opset", [18, 20])
def test_newer_opsets(exported, opset):
    for mode in ("onnx", "debx"):
        res = exported("v3", mode, opset=opset)
        g = _graph(res)
        assert next(o.version for o in g.opset_import if o.domain == "") == opset
        assert res.metadata["opset"] == opset and res.report.ok


def test_pinned_batch_and_sequence(exported):
    res = exported("v2", "onnx", batch=3, seq=24)
    g = _graph(res)
    for vi in g.graph.input:
        assert [d.dim_value for d in vi.type.tensor_type.shape.dim] == [3, 24]
    assert [d.dim_value for d in g.graph.output[0].type.tensor_type.shape.dim] == [3, 2]
    assert {(c["batch"], c["seq"]) for c in res.report.cases} == {(3, 24)}
    assert res.metadata["shapes"] == {"batch": 3, "sequence": 24, "max_seq_len": 24}


def test_max_seq_len_is_the_validated_length_not_a_graph_limit(exported):
    """--max-seq-len sets the longest validation case; the relative index table is the model's own (up to where the
    slot saturates), so the graph takes any length (tests/exporters/test_long_sequences.py runs 1500 tokens)."""
    import debx.model as dm

    res = exported("v3", "onnx", max_seq_len=40)
    assert max(c["seq"] for c in res.report.cases) == 40
    g = _graph(res)
    reach = dm.relative_index_reach(64, 64, 128)  # the tiny v3: 64 buckets over 128 positions
    assert reach > 40
    assert any(tuple(t.dims) == (2 * reach - 1,) for t in g.graph.initializer), "the saturated index table"
    assert not any(tuple(t.dims) == (2 * 40 - 1,) for t in g.graph.initializer), "no table cut to --max-seq-len"


@pytest.mark.parametrize("head", ["classification", "regression", "embeddings", "masked-lm"])
def test_heads(tmp_path, tiny_head_checkpoints, glue_dir, head):
    out = tmp_path / f"{head}.onnx"
    res = export_onnx(ExportConfig(tiny_head_checkpoints[head], out, attention="debx", data_dir=glue_dir,
                                   head=head if head != "classification" else None))
    g = _graph(res)
    name = {"embeddings": "last_hidden_state"}.get(head, "logits")
    assert [o.name for o in g.graph.output] == [name]
    dims = [d.dim_param or d.dim_value for d in g.graph.output[0].type.tensor_type.shape.dim]
    assert dims == {"classification": ["batch", 2], "regression": ["batch", 1], "embeddings": ["batch", "sequence", 32],
                    "masked-lm": ["batch", "sequence", 1000]}[head]
    assert res.metadata["head"] == head and res.report.ok
    if head == "masked-lm":
        assert res.report.argmax_agreement == 1.0


def test_fp16_graph_keeps_layernorm_in_fp32_and_has_no_overflow(exported):
    res = exported("v3", "onnx", True)
    g = _graph(res)
    inits = {t.name: t.data_type for t in g.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in inits.values()
    assert all(t.data_type != onnx.TensorProto.FLOAT16 for t in g.graph.initializer
               if any(n.op_type == "LayerNormalization" and t.name in n.input for n in g.graph.node))
    producers = {o: n for n in g.graph.node for o in n.output}
    for n in g.graph.node:
        if n.op_type == "LayerNormalization":
            assert producers[n.input[0]].op_type == "Cast"  # FP16 activations cast up into the FP32 LayerNorm
    assert not [f for f in res.report.failures if "overflow" in f]
    assert res.metadata["keep_fp32"] == ["LayerNormalization"]


def test_fp16_overflow_is_detected():
    from onnx import TensorProto, helper

    from debx.exporters.fp16 import overflow_problems

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2])
    big = helper.make_tensor("big", TensorProto.FLOAT16, [1], [60000.0])
    nodes = [helper.make_node("Mul", ["x", "big"], ["t"], name="scale"), helper.make_node("Mul", ["t", "x"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [big]), opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=onnx.IR_VERSION - 1)
    problems = overflow_problems(model, [{"x": np.array([0.5, 2.0], np.float16)}])
    assert problems and "t" in problems[0]
    assert overflow_problems(model, [{"x": np.array([0.001, 0.002], np.float16)}]) == []


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def test_sidecar(exported, tiny_checkpoints):
    res = exported("gimlp", "debx", True)
    side = json.loads(res.sidecar.read_text())
    assert res.sidecar.name == res.output.name + ".json"
    assert side["source"]["fingerprint"] == fingerprint(tiny_checkpoints["gimlp"])
    assert Path(side["source"]["checkpoint"]) == Path(tiny_checkpoints["gimlp"]).resolve()
    assert (side["variant"], side["attention"], side["precision"], side["opset"]) == ("gimlp", "debx", "fp16", 17)
    assert {"torch", "onnx", "onnxruntime", "python"} <= set(side["versions"])
    assert side["parity"]["max_abs_diff"] == res.report.max_abs_diff and side["parity"]["failures"] == []
    assert side["shapes"] == {"batch": "dynamic", "sequence": "dynamic", "max_seq_len": 128}
    meta = {p.key: p.value for p in _graph(res).metadata_props}
    assert meta["debx.attention"] == "debx" and meta["debx.source_fingerprint"] == side["source"]["fingerprint"]


def test_external_data(tmp_path, tiny_checkpoints, glue_dir, monkeypatch):
    out = tmp_path / "big.onnx"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "big.onnx.data").write_bytes(b"the user's own file")  # onnx.save_model(location=...) looks in the cwd
    monkeypatch.chdir(cwd)
    res = export_onnx(ExportConfig(tiny_checkpoints["v3"], out, attention="debx", data_dir=glue_dir,
                                   external_data_threshold=0))
    assert (cwd / "big.onnx.data").read_bytes() == b"the user's own file"
    data = res.external_data.name
    assert re.fullmatch(r"big\.onnx\.[0-9a-f]{8}\.data", data) and res.external_data.parent == tmp_path
    assert res.external_data.stat().st_size > 16_000_000
    assert out.stat().st_size < 1_000_000 and res.report.ok
    assert json.loads(res.sidecar.read_text())["external_data"] == data
    umask = os.umask(0o022)
    os.umask(umask)
    for f in (out, res.sidecar, res.external_data):  # the user's umask, not mkstemp's 0600
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", data, "big.onnx.json", "cwd"]
    # a new export writes its weights under a new name and removes the previous ones once it is in place
    again = export_onnx(ExportConfig(tiny_checkpoints["v3"], out, data_dir=glue_dir, external_data_threshold=0,
                                     validate=False))
    assert again.external_data.name != data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", again.external_data.name, "big.onnx.json", "cwd"]
    # overwriting with an in-file export removes the stale data file
    export_onnx(ExportConfig(tiny_checkpoints["v3"], out, data_dir=glue_dir))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.json", "cwd"]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_interrupted_export_leaves_the_previous_one_complete(tmp_path, tiny_checkpoints, glue_dir, monkeypatch):
    """KeyboardInterrupt at each rename of the commit in turn: the folder holds exactly the previous export (graph,
    weights, sidecar: same names, same bytes) or exactly the new one; never an old graph reading new weights."""
    out = tmp_path / "out" / "m.onnx"
    kw = dict(data_dir=glue_dir, external_data_threshold=0, validate=False)
    export_onnx(ExportConfig(tiny_checkpoints["v3"], out, **kw))
    old = _files(out.parent)
    real, calls = os.replace, []

    def interrupted_at(k):
        def replace(a, b):
            calls.append(b)
            if len(calls) == k:
                raise KeyboardInterrupt
            return real(a, b)
        return replace

    for k in range(1, 10):
        calls.clear()
        monkeypatch.setattr(os, "replace", interrupted_at(k))
        try:
            res = export_onnx(ExportConfig(tiny_checkpoints["v2"], out, **kw))
        except KeyboardInterrupt:
            monkeypatch.setattr(os, "replace", real)
            assert _files(out.parent) == old, f"interrupted at rename {k} ({calls[-1]})"
            continue
        monkeypatch.setattr(os, "replace", real)
        break
    assert k >= 4, "the commit has three renames after the staged sidecar's own"
    new = _files(out.parent)
    assert new != old and set(new) == {"m.onnx", "m.onnx.json", res.external_data.name}
    assert json.loads(new["m.onnx.json"])["external_data"] == res.external_data.name


def test_failed_validation_leaves_nothing(tmp_path, tiny_checkpoints, glue_dir, monkeypatch):
    from debx.exporters import onnx_config

    monkeypatch.setitem(onnx_config.TOLERANCES, "fp32", onnx_config.Tolerance(atol=-1.0, argmax_agreement=1.0))
    out = tmp_path / "model.onnx"
    with pytest.raises(ValidationFailed) as e:
        export_onnx(ExportConfig(tiny_checkpoints["v3"], out, data_dir=glue_dir))
    msg = str(e.value)
    assert "\n" not in msg and msg.count("max abs diff") >= 5, "every failing case is listed, on one line"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kw, err, match", [
    (dict(checkpoint="missing"), CheckpointError, "no such file"),
    (dict(attention="trt", variant="v1"), ConfigError, "v1 model with linear positions"),
    (dict(attention="trt", variant="v2"), ConfigError, "position_buckets <= 0"),
    (dict(attention="turbo"), ConfigError, "--attention"),
    (dict(output="model.pt"), ConfigError, "must end in .onnx"),
    (dict(max_seq_len=4096, variant="v1"), ConfigError, "exceeds the model's limit of 128 tokens"),  # absolute positions
    (dict(opset=13), ConfigError, "--opset 13"),
    (dict(head="pooler"), ConfigError, "--head"),
    (dict(head="regression"), ConfigError, "one label"),
    (dict(batch=0), ConfigError, "--batch"),
])
def test_bad_requests_fail_cleanly(tmp_path, tiny_checkpoints, kw, err, match):
    kw = dict(kw)
    variant = kw.pop("variant", "v3")
    ckpt = tmp_path / kw.pop("checkpoint") if "checkpoint" in kw else tiny_checkpoints[variant]
    out = tmp_path / "out" / kw.pop("output", "model.onnx")
    with pytest.raises(err, match=match):
        export_onnx(ExportConfig(ckpt, out, **kw))
    assert not out.exists() and not (out.parent.exists() and list(out.parent.iterdir()))


def test_portable_file_runs_in_plain_onnxruntime_without_debx(exported, tmp_path):
    """`--attention onnx` needs nothing but onnxruntime: load and run it in a fresh interpreter with no debx."""
    res = exported("v3", "onnx")
    ids = np.array([[1, 2006, 297, 3047, 2], [1, 845, 2, 0, 0]], dtype=np.int64)
    mask = (ids > 0).astype(np.int64)
    from debx.runtimes.torch import TorchRunner

    with TorchRunner(res.metadata["source"]["checkpoint"]) as r:
        want = r.infer({"input_ids": ids, "attention_mask": mask})["logits"]
    np.savez(tmp_path / "feeds.npz", input_ids=ids, attention_mask=mask, want=want)
    code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        f"d = np.load({str(tmp_path / 'feeds.npz')!r})\n"
        f"s = ort.InferenceSession({str(res.output)!r}, providers=['CPUExecutionProvider'])\n"
        "got = s.run(['logits'], {'input_ids': d['input_ids'], 'attention_mask': d['attention_mask']})[0]\n"
        "assert not any(m.startswith(('debx', 'exporters', 'torch')) for m in sys.modules), 'imported debx/torch'\n"
        "print(float(np.abs(got - d['want']).max()))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH="")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert float(p.stdout.strip()) <= 1e-4


def test_graph_checks_catch_what_they_forbid():
    from onnx import TensorProto, helper

    from debx.exporters.checks import graph_problems

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 7])  # sequence pinned by mistake
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])
    branch = helper.make_graph([helper.make_node("Identity", ["f"], ["y"])], "b", [],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["b"], to=TensorProto.BOOL, name="to_bool"),
        helper.make_node("Cast", ["b"], ["f"], to=TensorProto.FLOAT, name="bool_to_float"),
        helper.make_node("Cast", ["attention_mask"], ["u"], to=TensorProto.UINT8, name="to_uint8"),
        helper.make_node("ReduceMax", ["f"], ["c"], keepdims=0, name="any"),
        helper.make_node("Cast", ["c"], ["cb"], to=TensorProto.BOOL, name="cond"),
        helper.make_node("If", ["cb"], ["g"], then_branch=branch, else_branch=branch, name="branch"),
        helper.make_node("Mul", ["g", "f"], ["h"], name="mul"),
        helper.make_node("ReduceSum", ["h"], ["logits"], keepdims=1, name="sum"),
    ]
    model = helper.make_model(helper.make_graph(nodes, "bad", [ids, mask], [out]),
                              opset_imports=[helper.make_opsetid("", 17)])
    problems = " | ".join(graph_problems(model, mode="debx", num_layers=2, expected_axes={
        "input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}}))
    for expected in ("1 If node", "uint8", "bool_to_float", "input_ids axis 1 is 7", "0 DebxDisentangledAttention"):
        assert expected in problems, expected


@pytest.mark.parametrize("mode", ["debx", "fast"])
def test_export_patches_change_only_the_model_being_exported(tiny_checkpoints, mode):
    """The emission is set on one model's attention modules (no module global is rebound): a second model in the
    process runs its own attention meanwhile, and the exported model gets its own back on exit."""
    import torch

    import debx.model as dm
    from debx.exporters.export import export_patches

    model, ckpt = load_model(tiny_checkpoints["v3"])
    other, _ = load_model(tiny_checkpoints["v3"])
    model.eval(), other.eval()
    core = dm.attention_core
    feeds = {"input_ids": torch.tensor([[1, 7, 9, 11, 2]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        want = other(**feeds)
        calls = []
        with export_patches(model, mode):
            attns = [layer.attention.self for layer in model.deberta.encoder.layer]
            assert all(a.core is not None and a.core is attns[0].core for a in attns)
            assert all(layer.attention.self.core is None for layer in other.deberta.encoder.layer)
            assert dm.attention_core is core
            for a in attns:  # count what the patched model runs
                a.core = (lambda inner: lambda *args: calls.append(1) or inner(*args))(a.core)
            model(**feeds)
            assert len(calls) == len(attns)
            assert torch.equal(other(**feeds), want)  # untouched, and not routed through the emission
            assert len(calls) == len(attns)
        assert all(layer.attention.self.core is None for layer in model.deberta.encoder.layer)
        assert torch.equal(model(**feeds), want)
