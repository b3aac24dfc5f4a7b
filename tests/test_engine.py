"""debx.engine, the TensorRT runner and `debx build`: everything that needs no GPU.

Profiles, flag selection for TensorRT 10 and 11 (against fake `tensorrt`-like namespaces), plugin attributes, the
ONNX facts the builder checks, the sidecar and atomic writes; and that `debx build` / TensorRTRunner stop with one
clear line here, where TensorRT is absent.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from debx.engine import (
    TRT_MISSING,
    BuildConfig,
    FlagSelection,
    OnnxFacts,
    build_engine,
    check_plugins,
    make_profiles,
    onnx_facts,
    parse_shape,
    plan_sidecar,
    plugin_attributes,
    plugin_fields,
    resolve_flags,
    select_builder_flags,
    validate_config,
    write_plan,
)
from debx.errors import ConfigError, MissingDependencyError


def trt_available() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return True


# ---- a real small ONNX file -------------------------------------------------------------------------------------------


def tiny_onnx(path: Path, *, fp16: bool = False, qdq: bool = False, debx_node: bool = False) -> Path:
    """input_ids, attention_mask (B, N) int64 -> logits (B, N) through Cast/Mul (+ optional Q/DQ or a debx node)."""
    import onnx
    from onnx import TensorProto, helper

    ftype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids_f"], to=ftype),
             helper.make_node("Cast", ["attention_mask"], ["mask_f"], to=ftype),
             helper.make_node("Mul", ["ids_f", "mask_f"], ["logits"])]
    inits = []
    if qdq:
        inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes[-1] = helper.make_node("Mul", ["ids_f", "mask_f"], ["pre"])
        nodes += [helper.make_node("QuantizeLinear", ["pre", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
    if debx_node:
        nodes.append(helper.make_node("DebxDisentangledAttention", ["logits"], ["unused"], domain="debx",
                                      num_heads=1, scale=1.0, span=1, position_buckets=-1, max_relative_positions=1,
                                      c2p=0, p2c=0))
    dyn = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, dyn),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dyn)],
        [helper.make_tensor_value_info("logits", ftype, dyn)], initializer=inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("debx", 1)] if debx_node else [])
    model = helper.make_model(graph, opset_imports=opsets)
    if not debx_node:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


# ---- shapes and profiles ----------------------------------------------------------------------------------------------


def test_parse_shape():
    assert parse_shape("8x128") == (8, 128)
    assert parse_shape(" 1X1 ") == (1, 1)
    for bad in ("8", "x128", "0x16", "8x-1", "axb"):
        with pytest.raises(ConfigError):
            parse_shape(bad, "--opt")


def test_make_profiles_one_profile_over_batch_and_length(tmp_path):
    cfg = BuildConfig(onnx=tmp_path / "m.onnx", min_shape=(1, 1), opt_shape=(8, 128), max_shape=(32, 512))
    profiles = make_profiles(cfg, ["input_ids", "attention_mask", "token_type_ids"])
    assert profiles == [(n, (1, 1), (8, 128), (32, 512)) for n in ("input_ids", "attention_mask", "token_type_ids")]
    with pytest.raises(ConfigError, match="no inputs"):
        make_profiles(cfg, [])


def test_validate_config_errors(tmp_path):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    validate_config(BuildConfig(onnx=onnx))
    cases = [
        (dict(min_shape=(4, 1), opt_shape=(2, 128)), "min <= opt <= max"),
        (dict(opt_shape=(8, 1024)), "min <= opt <= max"),
        (dict(precision="int4"), "choose one of"),
        (dict(workspace_mib=0), "--workspace"),
        (dict(plugins=[tmp_path / "nope.so"]), "no such plugin library"),
        (dict(output=onnx), "overwrite the ONNX"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            validate_config(BuildConfig(onnx=onnx, **kwargs))
    with pytest.raises(ConfigError, match="no such ONNX file"):
        validate_config(BuildConfig(onnx=tmp_path / "missing.onnx"))
    assert BuildConfig(onnx=onnx).plan_path == tmp_path / "m.plan"


# ---- flags: TensorRT 10 and 11 ------------------------------------------------------------------------------------------

FP32_GRAPH = OnnxFacts(("input_ids",), frozenset({"float32"}), False, frozenset())
FP16_GRAPH = OnnxFacts(("input_ids",), frozenset({"float32", "float16"}), False, frozenset())
QDQ_GRAPH = OnnxFacts(("input_ids",), frozenset({"float32"}), True, frozenset())


def cfg_of(precision="fp32", strongly_typed=False):
    return BuildConfig(onnx=Path("m.onnx"), precision=precision, strongly_typed=strongly_typed)


@pytest.mark.parametrize("precision,flags", [("fp32", ()), ("fp16", ("FP16",)), ("bf16", ("BF16",)),
                                             ("int8", ("INT8", "FP16"))])
def test_trt10_weakly_typed_precision_flags(precision, flags):
    facts = QDQ_GRAPH if precision == "int8" else FP32_GRAPH
    sel = select_builder_flags(cfg_of(precision), 10, facts)
    assert sel == FlagSelection(False, flags)


def test_trt10_int8_needs_qdq_and_strongly_typed_ignores_precision_flags():
    with pytest.raises(ConfigError, match="debx calibrate"):
        select_builder_flags(cfg_of("int8"), 10, FP32_GRAPH)
    assert select_builder_flags(cfg_of("fp32", True), 10, FP32_GRAPH) == FlagSelection(True, ())
    assert select_builder_flags(cfg_of("fp16", True), 10, FP16_GRAPH) == FlagSelection(True, ())
    with pytest.raises(ConfigError, match="no float16 tensors"):
        select_builder_flags(cfg_of("fp16", True), 10, FP32_GRAPH)
    with pytest.raises(ConfigError, match="--strongly-typed takes precision from the ONNX"):
        select_builder_flags(cfg_of("fp16", True), 10, None)


def test_trt11_is_strongly_typed_only():
    sel = select_builder_flags(cfg_of("fp32"), 11, FP32_GRAPH)
    assert sel.strongly_typed and sel.builder_flags == ()
    assert any("removed weakly typed" in n for n in sel.notes)
    assert select_builder_flags(cfg_of("fp16"), 11, FP16_GRAPH).builder_flags == ()
    sel12 = select_builder_flags(cfg_of("int8"), 12, QDQ_GRAPH)
    assert sel12.strongly_typed and sel12.builder_flags == () and sel12.notes[0].startswith("TensorRT 12 removed")
    with pytest.raises(ConfigError, match="debx export --fp16"):
        select_builder_flags(cfg_of("fp16"), 11, FP32_GRAPH)
    with pytest.raises(ConfigError, match="no QuantizeLinear"):
        select_builder_flags(cfg_of("int8", True), 11, FP16_GRAPH)
    with pytest.raises(ConfigError, match="TensorRT 9 is too old"):
        select_builder_flags(cfg_of(), 9, FP32_GRAPH)


def fake_trt(major: int):
    """Just the enums resolve_flags touches, with TensorRT-like integer values."""
    creation = SimpleNamespace(STRONGLY_TYPED=1) if major == 10 else SimpleNamespace()
    if major == 10:
        builder = SimpleNamespace(FP16=0, INT8=1, BF16=17, STRICT_TYPES=5)
    else:  # TensorRT 11: precision flags gone
        builder = SimpleNamespace(DEBUG=2, REFIT=3)
    return SimpleNamespace(__version__=f"{major}.0.0", NetworkDefinitionCreationFlag=creation, BuilderFlag=builder)


def test_resolve_flags_against_trt10_and_trt11_namespaces():
    trt10, trt11 = fake_trt(10), fake_trt(11)
    assert resolve_flags(select_builder_flags(cfg_of("int8"), 10, QDQ_GRAPH), trt10) == (0, [1, 0])
    assert resolve_flags(select_builder_flags(cfg_of("bf16"), 10, FP32_GRAPH), trt10) == (0, [17])
    assert resolve_flags(select_builder_flags(cfg_of("fp32", True), 10, FP32_GRAPH), trt10) == (1 << 1, [])
    # TensorRT 11: no precision flags are looked up, strong typing needs no creation flag when the enum lacks it.
    assert resolve_flags(select_builder_flags(cfg_of("fp16"), 11, FP16_GRAPH), trt11) == (0, [])
    with pytest.raises(ConfigError, match="no BuilderFlag.FP16"):
        resolve_flags(FlagSelection(False, ("FP16",)), trt11)


# ---- plugin attributes --------------------------------------------------------------------------------------------------


def test_plugin_attributes_v3_v2_v1():
    from transformers import DebertaConfig as HFv1
    from transformers import DebertaV2Config as HFv2

    v3 = HFv2(hidden_size=768, num_attention_heads=12, relative_attention=True, pos_att_type=["p2c", "c2p"],
              position_buckets=256, max_relative_positions=-1, max_position_embeddings=512)
    a = plugin_attributes(v3)
    assert a == {"num_heads": 12, "scale": pytest.approx(1 / math.sqrt(64 * 3)), "span": 256,
                 "position_buckets": 256, "max_relative_positions": 512, "c2p": 1, "p2c": 1}
    v2_linear = dict(model_type="deberta-v2", hidden_size=64, num_attention_heads=4, relative_attention=True,
                     pos_att_type="c2p", position_buckets=-1, max_relative_positions=128)
    b = plugin_attributes(v2_linear)
    assert (b["span"], b["position_buckets"], b["c2p"], b["p2c"]) == (128, 0, 1, 0)
    assert b["scale"] == pytest.approx(1 / math.sqrt(16 * 2))
    v1 = HFv1(hidden_size=64, num_attention_heads=4, relative_attention=True, pos_att_type="c2p|p2c",
              max_relative_positions=-1, max_position_embeddings=256)
    c = plugin_attributes(v1)
    assert (c["span"], c["position_buckets"], c["max_relative_positions"]) == (256, 0, 256)
    for bad, msg in [(dict(v2_linear, relative_attention=False), "no relative"),
                     (dict(v2_linear, pos_att_type=["c2p", "p2p"]), "p2p"),
                     (dict(v2_linear, hidden_size=66), "multiple of num_attention_heads"),
                     (dict(v2_linear, position_buckets=256, max_relative_positions=100), "max_relative_positions")]:
        with pytest.raises(ConfigError, match=msg):
            plugin_attributes(bad)


def test_plugin_attributes_match_the_model():
    """The attributes equal what debx.model uses for its attention core (and so what the exporter writes)."""
    from debx.model import DebertaConfig, DisentangledSelfAttention

    for d in (dict(model_type="deberta-v2", hidden_size=96, num_attention_heads=3, relative_attention=True,
                   pos_att_type=["p2c", "c2p"], position_buckets=32, max_relative_positions=64),
              dict(model_type="deberta", hidden_size=64, num_attention_heads=2, relative_attention=True,
                   pos_att_type=["c2p", "p2c"], max_relative_positions=32)):
        cfg = DebertaConfig.from_hf_dict(d)
        attn = DisentangledSelfAttention(cfg)
        a = plugin_attributes(d)
        assert a["scale"] == pytest.approx(attn.scale)
        assert (a["span"], a["position_buckets"], a["max_relative_positions"]) == (cfg.span, cfg.buckets,
                                                                                    cfg.max_relative)


def test_plugin_fields_types_like_the_onnx_parser():
    fake = SimpleNamespace(PluginField=lambda name, data, kind: (name, data, kind),
                           PluginFieldType=SimpleNamespace(INT32="INT32", FLOAT32="FLOAT32"),
                           PluginFieldCollection=list)
    fields = plugin_fields({"num_heads": 12, "scale": 0.125, "c2p": 1}, fake)
    assert [(n, k) for n, _, k in fields] == [("num_heads", "INT32"), ("scale", "FLOAT32"), ("c2p", "INT32")]
    assert fields[0][1].dtype == np.int32 and fields[1][1].dtype == np.float32 and fields[1][1][0] == 0.125


# ---- ONNX facts, plugins, sidecar ----------------------------------------------------------------------------------------


def test_onnx_facts(tmp_path):
    f = onnx_facts(tiny_onnx(tmp_path / "a.onnx"))
    assert f.input_names == ("input_ids", "attention_mask") and not f.has_qdq and "float16" not in f.float_types
    assert "float16" in onnx_facts(tiny_onnx(tmp_path / "b.onnx", fp16=True)).float_types
    assert onnx_facts(tiny_onnx(tmp_path / "c.onnx", qdq=True)).has_qdq
    g = onnx_facts(tiny_onnx(tmp_path / "d.onnx", debx_node=True))
    assert g.plugin_ops == {"DebxDisentangledAttention"}
    with pytest.raises(ConfigError, match="--plugins"):
        check_plugins(g, [])
    check_plugins(g, [Path("libdebx_plugins.so")])
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="not a readable ONNX model"):
        onnx_facts(tmp_path / "bad.onnx")


def test_sidecar_and_atomic_write(tmp_path):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    (tmp_path / "m.onnx.json").write_text(json.dumps({"source": {"checkpoint": "/ckpt"}, "attention": "debx"}))
    cfg = BuildConfig(onnx=onnx, precision="fp16")
    sel = select_builder_flags(cfg, 10, onnx_facts(onnx))
    profiles = make_profiles(cfg, ["input_ids", "attention_mask"])
    from debx.artifacts import read_sidecar

    side = plan_sidecar(cfg, sel, profiles, {"tensorrt": "10.14.1", "debx": "0.1.0"}, [], "abc",
                        read_sidecar(onnx))
    side_path = write_plan(cfg.plan_path, b"PLAN", side)
    assert cfg.plan_path.read_bytes() == b"PLAN"
    stored = json.loads(side_path.read_text())
    assert side_path.name == "m.plan.json"
    assert stored["builder_flags"] == ["FP16"] and stored["strongly_typed"] is False
    assert stored["profiles"][0] == {"input": "input_ids", "min": [1, 1], "opt": [8, 128], "max": [32, 512]}
    assert stored["versions"]["tensorrt"] == "10.14.1" and stored["source"] == {"checkpoint": "/ckpt"}
    assert stored["inputs"] == ["input_ids", "attention_mask"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.json", "m.plan", "m.plan.json"]


# ---- without TensorRT: one clear line -------------------------------------------------------------------------------------


@pytest.mark.skipif(trt_available(), reason="TensorRT is installed here")
def test_build_engine_without_tensorrt(tmp_path):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(MissingDependencyError) as e:
        build_engine(BuildConfig(onnx=onnx))
    assert str(e.value) == TRT_MISSING
    assert not (tmp_path / "m.plan").exists()


def test_build_refuses_a_model_calibrated_for_onnx_runtime(tmp_path, monkeypatch):
    """`debx calibrate --target ort` output (uint8 activations) is refused before TensorRT is even imported."""
    import debx.engine as engine

    onnx = tiny_onnx(tmp_path / "m.int8.onnx", qdq=True)
    (tmp_path / "m.int8.onnx.json").write_text(json.dumps({"precision": "int8", "target": "ort"}))

    def no_tensorrt():
        raise AssertionError("TensorRT imported before the target check")

    monkeypatch.setattr(engine, "import_tensorrt", no_tensorrt)
    with pytest.raises(ConfigError, match="calibrated for ONNX Runtime CPU .uint8 activations.; recalibrate with "
                                          "--target trt for TensorRT"):
        build_engine(BuildConfig(onnx=onnx, precision="int8"))
    assert not (tmp_path / "m.int8.plan").exists()
    (tmp_path / "m.int8.onnx.json").write_text(json.dumps({"precision": "int8", "target": "trt"}))
    with pytest.raises(AssertionError, match="TensorRT imported"):  # a trt-target model gets past the check
        build_engine(BuildConfig(onnx=onnx, precision="int8"))


def run_build_cli(args: list[str]) -> subprocess.CompletedProcess:
    """`debx build ...` through the real CLI when it is wired, else through the same error handling as debx.cli.main."""
    try:
        from debx.cli import COMMANDS

        wired = any(name == "build" for name, _ in COMMANDS)
    except Exception:
        wired = False
    if wired:
        cmd = [sys.executable, "-m", "debx", "build", *args]
    else:
        script = ("import sys, typer\nfrom debx.cli.build import command\nfrom debx.errors import DebxError\n"
                  "app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)\napp.command()(command)\n"
                  "try:\n    app(sys.argv[1:])\nexcept DebxError as e:\n"
                  "    print(f'debx: error: {e}', file=sys.stderr)\n    sys.exit(e.exit_code)\n")
        cmd = [sys.executable, "-c", script, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(trt_available(), reason="TensorRT is installed here")
def test_debx_build_cli_fails_with_one_line_here(tmp_path):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    proc = run_build_cli([str(onnx), "-o", str(tmp_path / "m.plan"), "--fp16", "--min", "1x8", "--opt", "4x64",
                          "--max", "8x128"])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"debx: error: {TRT_MISSING}"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "m.plan").exists() and not (tmp_path / "m.plan.json").exists()


def test_debx_build_cli_user_errors_come_first(tmp_path):
    proc = run_build_cli([str(tmp_path / "missing.onnx")])
    assert proc.returncode == 2 and proc.stderr.strip() == f"debx: error: {tmp_path / 'missing.onnx'}: no such ONNX file"
    onnx = tiny_onnx(tmp_path / "m.onnx")
    proc = run_build_cli([str(onnx), "--fp16", "--int8"])
    assert proc.returncode == 2 and "at most one of --fp16, --int8, --bf16" in proc.stderr
    proc = run_build_cli([str(onnx), "--opt", "64x8", "--max", "32x512"])
    assert proc.returncode == 2 and "min <= opt <= max" in proc.stderr
    proc = run_build_cli([str(tiny_onnx(tmp_path / "d.onnx", debx_node=True))])
    assert proc.returncode == 2 and "--plugins" in proc.stderr


@pytest.mark.skipif(trt_available(), reason="TensorRT is installed here")
def test_tensorrt_runner_fails_clearly_here(tmp_path):
    from debx.runtimes import runner_for
    from debx.runtimes.tensorrt import TensorRTRunner

    plan = tmp_path / "m.plan"
    plan.write_bytes(b"not really a plan")
    (tmp_path / "m.plan.json").write_text(json.dumps({"inputs": ["input_ids", "attention_mask"]}))
    runner = runner_for(plan)
    assert isinstance(runner, TensorRTRunner)
    assert runner.input_names == ["input_ids", "attention_mask"]  # from the sidecar, before activation
    with pytest.raises(MissingDependencyError, match="TensorRT Python package not found"):
        runner.activate()
    assert not runner.is_active
    with pytest.raises(ConfigError, match="no such TensorRT plan"):
        TensorRTRunner(tmp_path / "missing.plan").activate()
    assert runner.describe()["runner"] == "tensorrt"
