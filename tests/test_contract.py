"""One contract for debx::DebxDisentangledAttention (debx/contract.py), held against every place that registers or
writes the op: the C++ TensorRT plugin creator, the C++ ONNX Runtime custom op, the NumPy reference ops, the
exporter and `debx build`'s plugin fields. The C++ is read as text (no compiler needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from debx.contract import DEBX_ATTENTION, TRT_ATTENTION, Attribute, OpContract

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_H = ROOT / "plugins" / "disentangledAttention" / "disentangledAttentionPlugin.h"
PLUGIN_CPP = ROOT / "plugins" / "disentangledAttention" / "disentangledAttentionPlugin.cpp"
ORT_CPP = ROOT / "plugins" / "ortOps" / "debxOrtOps.cpp"

TRT_KINDS = {"kINT32": "i", "kFLOAT32": "f"}


def _constant(text: str, name: str) -> str:
    m = re.search(rf'constexpr\s+char\s+const\s*\*\s*{name}\s*=\s*"([^"]*)"\s*;', text)
    assert m, f"no string constant {name}"
    return m.group(1)


def tensorrt_registration(header: str, source: str) -> dict:
    """What the TensorRT plugin registers: name, version, namespace, inputs, creator fields (name, kind) in order, the
    required fields, and the fields parseAttributes accepts."""
    fields = dict(re.findall(r'constexpr\s+char\s+const\s*\*\s*(kFIELD_\w+)\s*=\s*"([^"]*)"\s*;', source))
    creator = re.findall(r"mFields\.emplace_back\((kFIELD_\w+),\s*nullptr,\s*PluginFieldType::(\w+),\s*1\)", source)
    required = re.search(r"char\s+const\s*\*\s*required\[\d+\]\s*=\s*\{([^}]*)\}", source)
    assert required, "no required-field list in parseAttributes"
    parsed = re.findall(r"name\s*==\s*(kFIELD_\w+)", source)
    namespaces = set(re.findall(r"getPluginNamespace\(\)\s*const\s*noexcept\s*\{\s*return\s*\"([^\"]*)\"", source))
    inputs = re.search(r"enum\s+InputIndex[^{]*\{([^}]*)\}", source)
    return {
        "name": _constant(header, "kDISENTANGLED_ATTENTION_NAME"),
        "version": _constant(header, "kDISENTANGLED_ATTENTION_VERSION"),
        "namespaces": namespaces,
        "inputs": len(re.findall(r"\bk(?!OUTPUT)\w+\s*=\s*\d+", inputs.group(1))) if inputs else None,
        "fields": [(fields[f], TRT_KINDS.get(t, t)) for f, t in creator],
        "required": {fields[f.strip()] for f in required.group(1).split(",") if f.strip()},
        "parsed": {fields[f] for f in parsed if f in fields and f != "kFIELD_SERIALIZED"},  # not: the engine blob
    }


def ort_registration(source: str) -> dict:
    """What the ONNX Runtime custom op registers: domain, op name, input count, attributes it requires, optional
    attributes (read with a fallback), by kind."""
    ints = re.search(r"IntAttr\s*\{[^}]*\}\s*const\s+ints\[\]\s*=\s*\{(.*?)\};", source, re.S)
    assert ints, "no int attribute table in createKernel"
    required = {n: "i" for n in re.findall(r'\{"(\w+)",\s*&p\.\w+\}', ints.group(1))}
    required.update({n: "f" for n in re.findall(r'kernelInfoGetAttributeFloat\(info,\s*"(\w+)"', source)})
    optional = {n: "i" for n in re.findall(r'kernelInfoGetAttributeInt64\(info,\s*"(\w+)",[^)]*\)\)\s*//\s*optional',
                                           source)}
    n_inputs = re.search(r"constexpr\s+size_t\s+kNumInputs\s*=\s*(\d+)", source)
    return {"domain": _constant(source, "kDomain"), "name": _constant(source, "kOpName"),
            "inputs": int(n_inputs.group(1)) if n_inputs else None, "required": required, "optional": optional}


def tensorrt_problems(op: OpContract, reg: dict) -> list[str]:
    files = op.file_attributes()
    want = [(a.name, a.kind) for a in files]
    out = []
    if reg["name"] != op.name:
        out.append(f"TensorRT plugin name {reg['name']!r} != contract {op.name!r}")
    if reg["version"] != op.plugin_version:
        out.append(f"TensorRT plugin version {reg['version']!r} != contract {op.plugin_version!r}")
    if reg["namespaces"] != {""}:
        out.append(f"TensorRT plugin namespace {reg['namespaces']} != {{''}}")
    if reg["inputs"] != len(op.inputs):
        out.append(f"TensorRT plugin inputs {reg['inputs']} != contract {len(op.inputs)}")
    if reg["fields"] != want:
        out.append(f"TensorRT creator fields {reg['fields']} != contract {want}")
    if reg["required"] != {a.name for a in files if a.required}:
        out.append(f"TensorRT required fields {sorted(reg['required'])} != contract "
                   f"{sorted(a.name for a in files if a.required)}")
    if reg["parsed"] != {a.name for a in files}:
        out.append(f"TensorRT parseAttributes reads {sorted(reg['parsed'])} != contract {[a.name for a in files]}")
    return out


def ort_problems(op: OpContract, reg: dict) -> list[str]:
    out = []
    if (reg["domain"], reg["name"]) != op.key:
        out.append(f"ONNX Runtime op {(reg['domain'], reg['name'])} != contract {op.key}")
    if reg["inputs"] != len(op.inputs):
        out.append(f"ONNX Runtime op inputs {reg['inputs']} != contract {len(op.inputs)}")
    # every attribute a file carries is read (files always carry all of them: the exporter writes the defaults);
    # the runtime-only ones are optional
    files = {a.name: a.kind for a in op.file_attributes()}
    runtime_only = {a.name: a.kind for a in op.attributes if not a.in_files}
    if reg["required"] != files:
        out.append(f"ONNX Runtime op attributes {reg['required']} != contract {files}")
    if reg["optional"] != runtime_only:
        out.append(f"ONNX Runtime op optional attributes {reg['optional']} != contract {runtime_only}")
    return out


# ---------------------------------------------------------------------------------------------------------------------


def test_tensorrt_plugin_registers_the_contract():
    reg = tensorrt_registration(PLUGIN_H.read_text(), PLUGIN_CPP.read_text())
    assert len(reg["fields"]) == 7  # the parser found them
    assert tensorrt_problems(DEBX_ATTENTION, reg) == []


def test_onnxruntime_op_registers_the_contract():
    reg = ort_registration(ORT_CPP.read_text())
    assert len(reg["required"]) == 7
    assert ort_problems(DEBX_ATTENTION, reg) == []


def test_a_drifted_registration_is_caught():
    """The checks can fail: a renamed field, a type change, a dropped required flag, a renamed op."""
    h, cpp, ort = PLUGIN_H.read_text(), PLUGIN_CPP.read_text(), ORT_CPP.read_text()
    drifted = cpp.replace('kFIELD_SPAN = "span"', 'kFIELD_SPAN = "spans"')
    assert any("creator fields" in p for p in tensorrt_problems(DEBX_ATTENTION, tensorrt_registration(h, drifted)))
    drifted = cpp.replace("mFields.emplace_back(kFIELD_SCALE, nullptr, PluginFieldType::kFLOAT32, 1)",
                          "mFields.emplace_back(kFIELD_SCALE, nullptr, PluginFieldType::kINT32, 1)")
    assert tensorrt_problems(DEBX_ATTENTION, tensorrt_registration(h, drifted))
    drifted = cpp.replace("{kFIELD_NUM_HEADS, kFIELD_SCALE, kFIELD_SPAN, kFIELD_C2P, kFIELD_P2C}",
                          "{kFIELD_NUM_HEADS, kFIELD_SCALE, kFIELD_SPAN, kFIELD_C2P, kFIELD_C2P}")
    assert any("required" in p for p in tensorrt_problems(DEBX_ATTENTION, tensorrt_registration(h, drifted)))
    drifted = ort.replace('{"position_buckets", &p.positionBuckets}', '{"buckets", &p.positionBuckets}')
    assert ort_problems(DEBX_ATTENTION, ort_registration(drifted))
    drifted = ort.replace('kOpName = "DebxDisentangledAttention"', 'kOpName = "DebxAttention"')
    assert ort_problems(DEBX_ATTENTION, ort_registration(drifted))


def test_python_registrations_come_from_the_contract():
    from debx import engine
    from debx.runtimes import reference_ops as ref

    assert (ref.DEBX_DOMAIN, ref.DEBX_OP, ref.DEBX_OP_VERSION) == ("debx", "DebxDisentangledAttention", 1)
    assert ref.CUSTOM_NODES[DEBX_ATTENTION.key] == (0, 1, 2, 3, 4)
    assert ref.CUSTOM_NODES[TRT_ATTENTION.key] == (0, 1, 2)
    assert ref._ATTRS[DEBX_ATTENTION.name] == {a.name: a.kind for a in DEBX_ATTENTION.file_attributes()}
    assert engine.DEBX_PLUGIN_OP == DEBX_ATTENTION.name and engine.NVIDIA_PLUGIN_OP == TRT_ATTENTION.name
    cfg = {"model_type": "deberta-v2", "hidden_size": 24, "num_attention_heads": 3, "relative_attention": True,
           "pos_att_type": ["c2p", "p2c"], "position_buckets": 16, "max_relative_positions": 128,
           "max_position_embeddings": 128}
    attrs = engine.plugin_attributes(cfg)
    assert list(attrs) == [a.name for a in DEBX_ATTENTION.file_attributes()]  # `debx build` fields, in order


def test_symbolic_attributes():
    got = DEBX_ATTENTION.symbolic_attributes(num_heads=2, scale=0.5, span=4, c2p=1, p2c=0)
    assert got == {"num_heads_i": 2, "scale_f": 0.5, "span_i": 4, "position_buckets_i": -1,
                   "max_relative_positions_i": -1, "c2p_i": 1, "p2c_i": 0}
    with pytest.raises(ValueError, match="required attribute 'scale'"):
        DEBX_ATTENTION.symbolic_attributes(num_heads=2, span=4, c2p=1, p2c=0)
    with pytest.raises(ValueError, match="unknown attribute"):
        DEBX_ATTENTION.symbolic_attributes(num_heads=2, scale=0.5, span=4, c2p=1, p2c=0, bf16=1)  # never in files
    assert Attribute("x", "i").required and not Attribute("x", "i", default=0).required


# ---------------------------------------------------------------------------------------------------------------------
# One size rule for ONNX files
# ---------------------------------------------------------------------------------------------------------------------


def test_every_writer_and_the_runner_use_one_size_limit():
    import debx.calib.ranges
    import debx.runtimes.onnxruntime as ort_runtime
    import debx.exporters.export
    import debx.exporters.ort_optimize
    from debx.contract import INLINE_WEIGHTS_LIMIT, PROTOBUF_LIMIT

    assert (debx.exporters.export.EXTERNAL_DATA_THRESHOLD == debx.calib.ranges.LARGE_MODEL_BYTES
            == debx.exporters.ort_optimize.LARGE_BYTES == ort_runtime.IN_MEMORY_LIMIT == INLINE_WEIGHTS_LIMIT)
    assert PROTOBUF_LIMIT - INLINE_WEIGHTS_LIMIT == 64 * 2**20  # room for the graph


def test_a_model_just_under_2gb_is_inline_everywhere_and_rewritten_by_the_runner(tmp_path):
    """1.95 GB of weights: export and calibrate keep them inside the file, and the runner rewrites that file in memory
    (before: calibrate wrote them to a data file and the runner refused any file over 1.8 GB)."""
    from types import SimpleNamespace

    import debx.calib.ranges
    import debx.runtimes.onnxruntime as ort_runtime
    import debx.exporters.export
    from debx.artifacts import weights_bytes

    class Sized:  # a tensor's raw_data of n bytes, without the bytes
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

    class Tensor:
        def __init__(self, n):
            self.raw_data = Sized(n)

        def HasField(self, name):  # no external data
            return False

    n = 1_950_000_000
    graph = SimpleNamespace(graph=SimpleNamespace(initializer=[Tensor(n)]))
    assert weights_bytes(graph) == n
    assert not n > debx.exporters.export.EXTERNAL_DATA_THRESHOLD  # export: inline
    assert n <= debx.calib.ranges.LARGE_MODEL_BYTES  # calibrate: inline
    f = tmp_path / "big.onnx"
    with open(f, "wb") as fh:  # a sparse file of that size (the runner looked at the file size before)
        fh.truncate(n + 10_000_000)
    assert ort_runtime._fits_in_memory(f, graph)
    big = SimpleNamespace(graph=SimpleNamespace(initializer=[Tensor(debx.exporters.export.EXTERNAL_DATA_THRESHOLD + 1)]))
    with pytest.warns(UserWarning, match="too large"):
        assert not ort_runtime._fits_in_memory(f, big)


def test_one_definition_of_the_model_inputs_and_head_outputs(tiny_checkpoints):
    """Exporter, validator, runners, training and calibration name a model's inputs through debx.contract."""
    import debx.calib.data
    import debx.runtimes
    from debx.checkpoint import read_config
    from debx.contract import HEAD_OUTPUTS, INPUT_NAMES, input_names
    from debx.runtimes.torch import TorchRunner
    from debx.exporters.onnx_config import onnx_config_for

    assert input_names(2) == list(INPUT_NAMES) and input_names(0) == ["input_ids", "attention_mask"]
    assert debx.runtimes.HEAD_OUTPUTS is HEAD_OUTPUTS and debx.calib.data.FEED_NAMES == INPUT_NAMES
    for variant in ("v1", "v3"):
        cfg = read_config(tiny_checkpoints[variant])[0]
        with TorchRunner(tiny_checkpoints[variant]) as runner:
            assert onnx_config_for(cfg).input_names(cfg) == runner.input_names == input_names(cfg.type_vocab_size)
