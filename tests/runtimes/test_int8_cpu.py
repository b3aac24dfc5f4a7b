"""debx's native INT8 CPU ops (plugins/ortOps/matMulInt8*, layerNormQuantize*) and the in-memory rewrite that puts
INT8 graphs on them (debx.runtimes.int8_cpu). The rewrite is checked everywhere; the matmul ops run in every kernel
family this CPU has (amx: AMX-INT8 tiles, Intel Sapphire Rapids and later; avx512-vnni: AVX-512 VNNI; avx-vnni: the
VEX AVX-VNNI of Alder Lake and later client CPUs; avx2: AVX2 + FMA) and the others are skipped with the reason: the
CPUID feature this CPU lacks."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from debx.runtimes import int8_cpu, native_ops  # noqa: E402


def amx_here() -> bool:
    return native_ops.available() and native_ops.amx_available()


NATIVE_FAMILIES = (*int8_cpu.BEST_FIRST, *int8_cpu.OPT_IN)  # amx, avx512-vnni, avx-vnni, avx2


def why_not(family: str) -> str:
    if not native_ops.available():
        return f"{family}: no native library here ({native_ops.unavailable_reason()})"
    return f"{family}: this CPU (or OS) lacks {int8_cpu.NEEDS[family]}"


# every native matmul family, skipped with the reason where this CPU cannot run it
FAMILIES_HERE = [pytest.param(f, marks=pytest.mark.skipif(not int8_cpu.family_available(f), reason=why_not(f)))
                 for f in NATIVE_FAMILIES]


def best_here() -> str:
    return next((f for f in int8_cpu.BEST_FIRST if int8_cpu.family_available(f)), "ort")


needs_native = pytest.mark.skipif(not native_ops.available(), reason="no C++ compiler for the native ops")
NO_NORM = {"DebxLayerNormQuantize": 0, "DebxDisentangledAttention(bf16)": 0}


def ffn_model(M_dims=("batch", "seq"), K=192, N=96, seed=0, b_zero=0, gelu="com.microsoft"):
    """x (float) -> Q -> MatMulIntegerToFloat (K -> N) -> Gelu -> Q -> MatMulIntegerToFloat (N -> K) -> Sum(x) -> out,
    plus a MatMulIntegerToFloat off the first Q straight to an output (side): the three patterns of the rewrite."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "xs"), numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        numpy_helper.from_array(np.array(0.03, np.float32), "gs"), numpy_helper.from_array(np.array(10, np.uint8), "gz"),
    ]
    for name, (k, n) in {"w1": (K, N), "w2": (N, K), "w3": (K, N)}.items():
        inits += [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), name),
                  numpy_helper.from_array((rng.random(n) * 2e-3 + 1e-4).astype(np.float32), f"{name}_s"),
                  numpy_helper.from_array(np.full(n, b_zero if name == "w1" else 0, np.int8), f"{name}_z"),
                  numpy_helper.from_array(rng.normal(0, 0.3, n).astype(np.float32), f"{name}_b")]

    def mm(a, a_s, a_z, w, out):
        return helper.make_node("MatMulIntegerToFloat", [a, w, a_s, f"{w}_s", a_z, f"{w}_z", f"{w}_b"], [out],
                                domain="com.microsoft")

    gelu_node = {"com.microsoft": helper.make_node("Gelu", ["h"], ["g"], domain="com.microsoft"),
                 "onnx": helper.make_node("Gelu", ["h"], ["g"]),
                 "relu": helper.make_node("Relu", ["h"], ["g"])}[gelu]  # relu: nothing to fuse there
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        mm("xq", "xs", "xz", "w3", "side"),
        mm("xq", "xs", "xz", "w1", "h"), gelu_node,
        helper.make_node("QuantizeLinear", ["g", "gs", "gz"], ["gq"]),
        mm("gq", "gs", "gz", "w2", "f"),
        helper.make_node("Sum", ["f", "x"], ["out"]),
    ]
    dims = [*M_dims, K]
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, dims),
                               helper.make_tensor_value_info("side", TensorProto.FLOAT, [*M_dims, N])], inits)
    opset = 20 if gelu == "onnx" else 17
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("com.microsoft", 1)], ir_version=9)


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("gelu", ["com.microsoft", "onnx"])
def test_rewrite_fuses_the_three_patterns_in_topological_order(gelu):
    model = ffn_model(gelu=gelu)
    counts = int8_cpu.rewrite(model, family="amx")
    assert counts == {"DebxMatMulInt8": 1, "DebxMatMulInt8Add": 1, "DebxMatMulInt8GeluQuantize": 1, **NO_NORM}
    assert ops(model) == ["QuantizeLinear", "DebxMatMulInt8", "DebxMatMulInt8GeluQuantize", "DebxMatMulInt8Add"]
    fused = {n.op_type: n for n in model.graph.node}
    assert list(fused["DebxMatMulInt8GeluQuantize"].input[-2:]) == ["gs", "gz"]
    assert list(fused["DebxMatMulInt8GeluQuantize"].output) == ["gq"]
    assert fused["DebxMatMulInt8Add"].input[-1] == "x" and list(fused["DebxMatMulInt8Add"].output) == ["out"]
    assert any(o.domain == "debx" for o in model.opset_import)
    onnx.checker.check_model(model)  # still a valid, topologically sorted graph


def test_rewrite_leaves_what_it_cannot_run_alone():
    model = ffn_model(b_zero=3)  # asymmetric weights: the ops require zero points of 0
    model.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))  # a fused-away value wanted
    counts = int8_cpu.rewrite(model, family="amx")
    assert counts["DebxMatMulInt8GeluQuantize"] == 0 and counts["DebxMatMulInt8Add"] == 1
    assert ops(model).count("MatMulIntegerToFloat") == 1 and "Gelu" in ops(model)


def test_rewrite_does_not_fuse_one_sum_twice():
    model = ffn_model()
    # make the Sum add two matmul outputs: f + side (both convertible)
    for n in model.graph.node:
        if n.op_type == "Sum":
            n.input[1] = "side"
    del model.graph.output[1]
    counts = int8_cpu.rewrite(model, family="amx")
    assert counts["DebxMatMulInt8Add"] == 1 and counts["DebxMatMulInt8"] == 1
    onnx.checker.check_model(model)


def test_avx2_runs_only_when_forced(monkeypatch):
    """On a CPU whose only native family is avx2, the default stays ONNX Runtime's kernel (faster there); forcing
    avx2 picks it."""
    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    monkeypatch.setattr(int8_cpu, "family_available", lambda name: name == "avx2")
    assert int8_cpu.kernel_family() == "ort"
    monkeypatch.setenv("DEBX_CPU_KERNELS", "avx2")
    assert int8_cpu.kernel_family() == "avx2"


def test_switches(monkeypatch):
    from debx.errors import ConfigError

    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    monkeypatch.setenv("DEBX_AMX", "0")
    assert not int8_cpu.amx() and not int8_cpu.amx_bf16()
    assert int8_cpu.kernel_family() == next((f for f in int8_cpu.BEST_FIRST[1:] if int8_cpu.family_available(f)), "ort")
    monkeypatch.delenv("DEBX_AMX")
    assert int8_cpu.amx() == amx_here()
    assert int8_cpu.kernel_family() == best_here()
    monkeypatch.setenv("DEBX_CPU_KERNELS", "ort")
    assert sum(int8_cpu.rewrite(ffn_model()).values()) == 0  # matmuls kept; no LayerNormalization here
    assert not int8_cpu.amx_bf16()
    for family in NATIVE_FAMILIES:
        monkeypatch.setenv("DEBX_CPU_KERNELS", family)
        if int8_cpu.family_available(family):
            assert int8_cpu.kernel_family() == family
            model = ffn_model()
            assert sum(int8_cpu.rewrite(model).values()) == 3
            assert {a.name: a.i for n in model.graph.node if n.domain == "debx" for a in n.attribute} == {
                "family": int8_cpu.FAMILIES.index(family)}
        else:
            with pytest.raises(ConfigError, match=f"DEBX_CPU_KERNELS={family}: cannot run here, .*lacks"):
                int8_cpu.kernel_family()
    monkeypatch.setenv("DEBX_CPU_KERNELS", "avx3")
    with pytest.raises(ConfigError, match="DEBX_CPU_KERNELS=avx3: unknown kernel family"):
        int8_cpu.kernel_family()
    monkeypatch.delenv("DEBX_CPU_KERNELS")
    assert int8_cpu.wants(ffn_model()) == native_ops.available()
    monkeypatch.setenv("DEBX_NATIVE_OPS", "0")
    assert not int8_cpu.wants(ffn_model()) and not int8_cpu.amx() and int8_cpu.kernel_family() == "ort"


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.register_custom_ops_library(str(native_ops.library_path()))
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", FAMILIES_HERE)
@pytest.mark.parametrize("shape,K,N", [((2, 64), 192, 96), ((1, 37), 100, 50), ((3, 1), 64, 32), ((1, 130), 768, 3072),
                                       ((1, 9), 30, 17), ((2, 5), 66, 48), ((1, 700), 3072, 40)])  # 3 row groups
def test_ops_match_onnx_runtime(family, shape, K, N):
    """The integer sums are exact: DebxMatMulInt8 and DebxMatMulInt8Add equal MatMulIntegerToFloat (+ Sum) to float
    rounding; the fused GELU + QuantizeLinear may differ by one step where GELU lands on a rounding boundary."""
    x = np.random.default_rng(1).normal(0, 2, (*shape, K)).astype(np.float32)
    for gelu, names in (("relu", ["out", "side"]), ("com.microsoft", ["gq"])):
        model = ffn_model(K=K, N=N, gelu=gelu)
        model.graph.output.append(helper.make_tensor_value_info("gq", TensorProto.UINT8, None))
        fused = onnx.ModelProto()
        fused.CopyFrom(model)
        assert sum(int8_cpu.rewrite(fused, family=family).values()) == 3
        ref = dict(zip(names, _session(model).run(names, {"x": x})))
        got = dict(zip(names, _session(fused).run(names, {"x": x})))
        for name in names:
            if name == "gq":
                steps = np.abs(got[name].astype(int) - ref[name].astype(int))
                assert steps.max() <= 1 and (steps > 0).mean() <= 1e-3, (steps.max(), (steps > 0).mean())
            else:
                np.testing.assert_allclose(got[name], ref[name], rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("family", FAMILIES_HERE)
def test_op_errors_are_clear(family):
    model = ffn_model()
    int8_cpu.rewrite(model, family=family)
    for t in model.graph.initializer:
        if t.name == "w3_z":
            t.CopyFrom(numpy_helper.from_array(np.full(96, 1, np.int8), "w3_z"))
    with pytest.raises(Exception, match="DebxMatMulInt8: b_zero_point must be all 0"):
        _session(model)


@needs_native
@pytest.mark.parametrize("family", NATIVE_FAMILIES)
def test_kernels_refuse_a_family_this_cpu_lacks(family):
    if int8_cpu.family_available(family):
        pytest.skip(f"this CPU runs {family}: nothing to refuse")
    model = ffn_model()
    int8_cpu.rewrite(model, family=family)
    with pytest.raises(Exception, match=f"DebxMatMulInt8: this CPU \\(or OS\\) cannot run the {family} kernels"):
        _session(model)


@pytest.mark.parametrize("family", FAMILIES_HERE)
def test_open_session_rewrites_int8_files_and_keeps_the_file(tmp_path, monkeypatch, family):
    from debx.runtimes.onnxruntime import open_session

    path = tmp_path / "ffn.onnx"
    onnx.save(ffn_model(gelu="relu"), str(path))  # nothing approximate: the two sessions agree to rounding
    x = np.random.default_rng(2).normal(0, 2, (2, 16, 192)).astype(np.float32)
    monkeypatch.setenv("DEBX_CPU_KERNELS", family)
    info: dict = {}
    fast = open_session(path, threads=2, info=info).run(["out"], {"x": x})[0]
    assert info["int8_kernels"] == family
    assert info["rewrites"] == [{"step": "int8-matmul", "counts": {"DebxMatMulInt8": 2, "DebxMatMulInt8Add": 1},
                                 "choice": f"family {family}: DEBX_CPU_KERNELS={family}"}]
    assert info["int8_cpu"] == {"DebxMatMulInt8": 2, "DebxMatMulInt8Add": 1}
    monkeypatch.setenv("DEBX_CPU_KERNELS", "ort")
    info = {}
    plain = open_session(path, threads=2, info=info).run(["out"], {"x": x})[0]
    # nothing to rewrite here but the matmuls: the file as written, and the report says which switch chose that
    assert info == {"int8_kernels": "ort", "rewrites": [],
                    "rewrites_skipped": {"int8-matmul": "family ort: DEBX_CPU_KERNELS=ort"}}
    monkeypatch.setenv("DEBX_NATIVE_OPS", "0")
    monkeypatch.delenv("DEBX_CPU_KERNELS")
    info = {}
    np.testing.assert_allclose(open_session(path, threads=2, info=info).run(["out"], {"x": x})[0], plain, rtol=0, atol=0)
    assert info["rewrites"] == [] and "DEBX_NATIVE_OPS=0" in info["rewrites_skipped"]["int8-matmul"]
    np.testing.assert_allclose(fast, plain, rtol=1e-6, atol=1e-6)
    assert "MatMulIntegerToFloat" in ops(onnx.load(str(path)))  # the file keeps the standard ops


def norm_model(C=96, float_user="sum", seed=0):
    """x -> LayerNormalization -> QuantizeLinear -> q (an output), and the LN's float side: read directly by a Sum
    (float_user="sum"), or through DequantizeLinear(q) (float_user="dq")."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(1, 0.2, C).astype(np.float32), "gamma"),
             numpy_helper.from_array(rng.normal(0, 0.2, C).astype(np.float32), "beta"),
             numpy_helper.from_array(np.array(0.04, np.float32), "s"), numpy_helper.from_array(np.array(120, np.uint8), "z")]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-7),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["q"])]
    if float_user == "sum":
        nodes.append(helper.make_node("Sum", ["y", "x"], ["f"]))
    else:
        nodes += [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"]), helper.make_node("Sum", ["dq", "x"], ["f"])]
    graph = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "n", C])],
                              [helper.make_tensor_value_info("q", TensorProto.UINT8, ["b", "n", C]),
                               helper.make_tensor_value_info("f", TensorProto.FLOAT, ["b", "n", C])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("float_user", ["sum", "dq"])
def test_rewrite_fuses_layernorm_quantize(float_user):
    model = norm_model(float_user=float_user)
    assert int8_cpu.rewrite(model, family="ort")["DebxLayerNormQuantize"] == 1
    fused = model.graph.node[0]
    assert fused.op_type == "DebxLayerNormQuantize" and list(fused.output) == ["q", "y" if float_user == "sum" else "dq"]
    attrs = {a.name: helper.get_attribute_value(a) for a in fused.attribute}
    assert attrs["dequantized"] == (float_user == "dq") and attrs["epsilon"] == pytest.approx(1e-7)
    assert ops(model) == ["DebxLayerNormQuantize", "Sum"]
    onnx.checker.check_model(model)


def test_rewrite_leaves_other_layernorms():
    model = norm_model()
    model.graph.node[0].attribute.append(helper.make_attribute("stash_type", 0))  # not float32 statistics
    assert int8_cpu.rewrite(model, family="ort")["DebxLayerNormQuantize"] == 0
    model = norm_model()
    model.graph.node[0].attribute[0].i = 1  # axis 1 of (b, n, C): not the last axis
    assert int8_cpu.rewrite(model, family="ort")["DebxLayerNormQuantize"] == 0


@needs_native
@pytest.mark.parametrize("float_user", ["sum", "dq"])
@pytest.mark.parametrize("C", [96, 768, 37])
def test_layernorm_quantize_matches_onnx_runtime(float_user, C):
    model = norm_model(C=C, float_user=float_user)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    int8_cpu.rewrite(fused, family="ort")
    x = np.random.default_rng(3).normal(0.5, 3, (3, 41, C)).astype(np.float32)
    ref = _session(model).run(["q", "f"], {"x": x})
    got = _session(fused).run(["q", "f"], {"x": x})
    steps = np.abs(got[0].astype(int) - ref[0].astype(int))
    assert steps.max() <= 1 and (steps > 0).mean() <= 1e-3, (steps.max(), (steps > 0).mean())
    same = (steps == 0) if float_user == "dq" else np.ones_like(steps, bool)  # a flipped q moves its dequantized copy
    np.testing.assert_allclose(got[1][same], ref[1][same], rtol=1e-5, atol=1e-5)


def test_rewrite_switches_debx_attention_to_bf16_only_when_asked():
    from debx.runtimes.reference_ops import DEBX_DOMAIN, DEBX_OP

    model = ffn_model()
    model.graph.node.append(helper.make_node(DEBX_OP, ["out", "out", "out", "pk", "pq", "mask"], ["att"],
                                             domain=DEBX_DOMAIN, num_heads=2))
    assert int8_cpu.rewrite(model, family="ort", attention="float32")["DebxDisentangledAttention(bf16)"] == 0
    assert not any(a.name == "bf16" for a in model.graph.node[-1].attribute)
    assert int8_cpu.attention_mode_in(model) == "float32"
    assert int8_cpu.rewrite(model, family="ort", attention="avx512-bf16")["DebxDisentangledAttention(bf16)"] == 1
    assert {a.name: a.i for a in model.graph.node[-1].attribute}["bf16"] == 3  # the family, by the op's numbering
    assert int8_cpu.attention_mode_in(model) == "avx512-bf16"
    assert int8_cpu.rewrite(model, family="ort", attention="amx-bf16")["DebxDisentangledAttention(bf16)"] == 0  # once
    with pytest.raises(ValueError, match="unknown attention mode 'bf16'"):
        int8_cpu.rewrite(model, family="ort", attention="bf16")


@needs_native
def test_files_too_large_for_one_protobuf_run_as_written(tmp_path, monkeypatch):
    from debx.runtimes import onnxruntime as ort_runtime

    path = tmp_path / "ffn.onnx"
    onnx.save(ffn_model(), str(path))
    monkeypatch.setattr(ort_runtime, "IN_MEMORY_LIMIT", 10)  # pretend the file is beyond 2 GiB
    info: dict = {}
    with pytest.warns(UserWarning, match="too large for debx's in-memory graph rewrites"):
        session = ort_runtime.open_session(path, threads=1, info=info)
    assert info["rewrites"] == [] and info["int8_kernels"] == "ort"
    assert info["rewrites_skipped"] == ({"int8-matmul": "too large"} if best_here() != "ort" else {})
    assert session.run(["out"], {"x": np.zeros((1, 4, 192), np.float32)})[0].shape == (1, 4, 192)


@needs_native
def test_nothing_to_rewrite_means_the_file_as_it_is(tmp_path, monkeypatch):
    from debx.runtimes.onnxruntime import open_session

    path = tmp_path / "ffn.onnx"
    onnx.save(ffn_model(), str(path))  # no LayerNormalization; with DEBX_AMX=0 nothing matches
    monkeypatch.setenv("DEBX_CPU_KERNELS", "ort")
    info: dict = {}
    out = open_session(path, threads=1, info=info).run(["out"], {"x": np.ones((1, 3, 192), np.float32)})[0]
    assert info["int8_kernels"] == "ort" and info["rewrites"] == [] and out.shape == (1, 3, 192)
    monkeypatch.delenv("DEBX_CPU_KERNELS")
    info = {}
    open_session(path, threads=1, info=info)
    assert ("int8_cpu" in info) == (best_here() != "ort") and info["int8_kernels"] == best_here()
    assert [r["step"] for r in info["rewrites"]] == (["int8-matmul"] if best_here() != "ort" else [])


def test_reports_name_the_kernel_family():
    from debx.evaluate import gate_notes, kernel_notes

    ran = {"runner": "onnxruntime", "int8_kernels": "avx512-vnni",
           "native_int8_ops": {"DebxMatMulInt8": 48, "DebxLayerNormQuantize": 23}}
    line = "INT8 matmul kernels avx512-vnni; debx native INT8 CPU ops DebxMatMulInt8 ×48, DebxLayerNormQuantize ×23"
    assert int8_cpu.kernel_summary(ran) == line
    assert kernel_notes({"runner": ran}) == [line] and line in gate_notes({"runner": ran})
    assert kernel_notes({"runner": {"int8_kernels": "ort", "native_int8_ops": None}}) == ["INT8 matmul kernels ort"]
    assert kernel_notes({"runner": {"runner": "pytorch"}}) == []  # not an INT8 file on the CPU: nothing to say
    for mode in ("amx-bf16", "avx512-bf16", "float32"):  # the attention's mode, when the graph has debx's attention
        assert kernel_notes({"runner": {**ran, "attention_kernels": mode}}) == [line.replace(
            "avx512-vnni; ", f"avx512-vnni; attention {mode}; ")]
    for family in NATIVE_FAMILIES:
        assert kernel_notes({"runner": {"int8_kernels": family}}) == [f"INT8 matmul kernels {family}"]


# ---- each family against an exact NumPy reference ------------------------------------------------------------------

def op_model(op: str, K: int, N: int, family: str, seed: int = 0):
    """One debx matmul node, A (M, K) uint8 -> (M, N), with power-of-two scales and a bias on the same grid, so every
    float it writes is exact: the integer sums can be read back from the output exactly (|sum| < 2**21)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (K, N), dtype=np.int8)
    b_scale = (2.0 ** -rng.integers(6, 10, N)).astype(np.float32)
    bias = (rng.integers(-2 ** 12, 2 ** 12, N) * 2.0 ** -13).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(2.0 ** -4, np.float32), "a_s"),
             numpy_helper.from_array(b_scale, "w_s"), numpy_helper.from_array(np.array(131, np.uint8), "a_z"),
             numpy_helper.from_array(np.zeros(N, np.int8), "w_z"), numpy_helper.from_array(bias, "bias")]
    inputs = ["a", "w", "a_s", "w_s", "a_z", "w_z", "bias"]
    graph_inputs = [helper.make_tensor_value_info("a", TensorProto.UINT8, ["m", K])]
    out_type = TensorProto.FLOAT
    if op == "DebxMatMulInt8Add":
        inputs.append("r")
        graph_inputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, ["m", N]))
    elif op == "DebxMatMulInt8GeluQuantize":
        inits += [numpy_helper.from_array(np.array(0.011, np.float32), "y_s"),
                  numpy_helper.from_array(np.array(7, np.uint8), "y_z")]
        inputs += ["y_s", "y_z"]
        out_type = TensorProto.UINT8
    node = helper.make_node(op, inputs, ["y"], domain="debx", family=int8_cpu.FAMILIES.index(family))
    graph = helper.make_graph([node], "mm", graph_inputs, [helper.make_tensor_value_info("y", out_type, ["m", N])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("debx", 1)],
                              ir_version=9)
    return model, {"w": w, "scale": 2.0 ** -4 * b_scale.astype(np.float64), "bias": bias.astype(np.float64)}


def reference(op: str, a: np.ndarray, r: np.ndarray | None, p: dict) -> np.ndarray:
    """The ops' math in exact integers and float64: sum_k (A - 131) B, scaled, + bias [+ residual | GELU, quantize]."""
    acc = (a.astype(np.int64) - 131) @ p["w"].astype(np.int64)
    assert np.abs(acc).max() < 2 ** 21  # the floats below are exact
    y = acc * p["scale"] + p["bias"]
    if op == "DebxMatMulInt8":
        return y.astype(np.float32)
    if op == "DebxMatMulInt8Add":
        return (y + r).astype(np.float32)
    from math import erf

    g = 0.5 * y * (1.0 + np.vectorize(erf)(y / np.sqrt(2.0)))
    return np.clip(np.rint(g / np.float64(np.float32(0.011))) + 7, 0, 255).astype(np.uint8)


MATMUL_SHAPES = [(1, 5, 1), (1, 3, 17), (1, 768, 96), (3, 30, 33), (7, 66, 40), (2, 100, 50), (13, 192, 96),
                 (33, 130, 65), (37, 64, 8), (700, 3072, 40)]  # K % 4, K % 64, N % 8 / 16 / 32 tails, M = 1; 3 row groups


@pytest.mark.parametrize("family", FAMILIES_HERE)
@pytest.mark.parametrize("op", int8_cpu.MATMUL_OPS)
@pytest.mark.parametrize("M,K,N", MATMUL_SHAPES)
def test_family_matches_exact_reference(family, op, M, K, N):
    """Every family, every epilogue, odd shapes: the plain and residual outputs equal the exact reference bit for bit
    (so the integer sums are exact); GELU + QuantizeLinear within one step, on at most 0.1% of the values (GELU's
    polynomial at a rounding boundary)."""
    model, p = op_model(op, K, N, family, seed=K + N)
    rng = np.random.default_rng(M)
    a = rng.integers(0, 256, (M, K), dtype=np.uint8)
    feeds = {"a": a}
    r = None
    if op == "DebxMatMulInt8Add":
        r = (rng.integers(-2 ** 20, 2 ** 20, (M, N)) * 2.0 ** -13).astype(np.float32)
        feeds["r"] = r
    got = _session(model).run(["y"], feeds)[0]
    want = reference(op, a, None if r is None else r.astype(np.float64), p)
    if op == "DebxMatMulInt8GeluQuantize":
        steps = np.abs(got.astype(int) - want.astype(int))
        assert steps.max() <= 1 and (steps > 0).sum() <= max(1, steps.size // 1000), (steps.max(), (steps > 0).sum())
    else:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("family", NATIVE_FAMILIES)
def test_forcing_a_family_this_cpu_lacks_is_one_clear_line(family, monkeypatch):
    from debx.errors import ConfigError

    if int8_cpu.family_available(family):
        pytest.skip(f"this CPU runs {family}: nothing to refuse")
    monkeypatch.setenv("DEBX_CPU_KERNELS", family)
    with pytest.raises(ConfigError) as e:
        int8_cpu.kernel_family()
    assert "\n" not in str(e.value) and f"DEBX_CPU_KERNELS={family}: cannot run here" in str(e.value)
    if native_ops.available():
        assert int8_cpu.NEEDS[family] in str(e.value)


@pytest.mark.slow
def test_every_family_gives_the_same_predictions_on_a_tiny_int8_model(tiny_checkpoints, glue_dir, tmp_path,
                                                                       monkeypatch):
    """`debx export --attention debx` -> `debx calibrate --target ort` on a tiny DeBERTa-v3, then the file opened with
    each kernel family forced in turn: the matmuls' integer sums are exact in every family, so the logits agree to
    float rounding (the fused GELU + quantize may move a value by one step) and the predictions are the same."""
    from debx.calib.calibrate import CalibrateConfig, calibrate
    from debx.exporters.export import ExportConfig, export_onnx
    from debx.runtimes.onnxruntime import open_session

    fp32 = export_onnx(ExportConfig(tiny_checkpoints["v3"], tmp_path / "v3.onnx", attention="debx",
                                    validate=False)).output
    out = tmp_path / "v3.int8.onnx"
    calibrate(CalibrateConfig(model=fp32, output=out, task="sst2", data_dir=glue_dir, method="minmax",
                              num_samples=16, threads=1, target="ort"))
    ids = np.random.default_rng(0).integers(5, 200, (8, 37)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::2, 20:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    logits = {}
    for family in ("ort", *(f for f in NATIVE_FAMILIES if int8_cpu.family_available(f))):
        monkeypatch.setenv("DEBX_CPU_KERNELS", family)
        info: dict = {}
        session = open_session(out, threads=2, info=info)
        assert info["int8_kernels"] == family
        if family != "ort":
            assert info["int8_cpu"]["DebxMatMulInt8GeluQuantize"] > 0 and info["int8_cpu"]["DebxMatMulInt8Add"] > 0
        logits[family] = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0]
    assert len(logits) >= 2, "no native family runs here"
    for family, got in logits.items():
        np.testing.assert_array_equal(got.argmax(-1), logits["ort"].argmax(-1), err_msg=family)
        # (identical on an Ice Lake Xeon: ort, avx512-vnni and avx2); a GELU value at a rounding boundary may differ
        np.testing.assert_allclose(got, logits["ort"], rtol=0, atol=1e-2 * np.abs(logits["ort"]).max(), err_msg=family)


def test_avx_vnni_family_with_an_emulated_vpdpbusd(tmp_path):
    """The avx-vnni family where the CPU lacks AVX-VNNI: tests/runtimes/avx_vnni_emulated.cpp compiles
    matMulInt8AvxVnni.cpp for AVX2 with VPDPBUSD emulated by its definition and checks every epilogue, odd shapes
    included, against exact sums and bit for bit against the avx2 family (the real instruction:
    test_portable_build.py::test_the_256_bit_families_need_no_avx512)."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    cxx = next((shutil.which(c) for c in (os.environ.get("CXX"), "g++", "c++", "clang++")
                if c and shutil.which(c)), None)
    if cxx is None:
        pytest.skip("no C++ compiler")
    root = Path(__file__).resolve().parents[2]
    exe = tmp_path / "avx_vnni_emulated"
    subprocess.run([cxx, "-O1", "-std=c++17", "-mavx2", "-mfma", f"-I{root / 'plugins' / 'ortOps'}",
                    str(root / "tests" / "runtimes" / "avx_vnni_emulated.cpp"),
                    str(root / "plugins" / "ortOps" / "matMulInt8Cpu.cpp"), "-o", str(exe)], check=True)
    proc = subprocess.run([str(exe)], capture_output=True, text=True)
    if proc.returncode == 2:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout
