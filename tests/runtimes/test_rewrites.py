"""The graph rewrites of debx's ONNX Runtime runner as named steps (debx.runtimes.rewrites): each step that ran is
named in the runner's describe(), the eval report and `debx bench`; `debx rewrite` writes them into a file that the
runner then opens as it is, with the same outputs as the rewrite in memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

from cli_helpers import run_main  # noqa: E402
from debx.runtimes import int8_cpu, native_ops, rewrites  # noqa: E402
from debx.runtimes.onnxruntime import open_session  # noqa: E402

needs_native = pytest.mark.skipif(not native_ops.available(), reason="no C++ compiler for the native ops")


def _family() -> str:
    return next((f for f in ("amx", "avx512-vnni") if int8_cpu.family_available(f)), "ort")


def expected_int8_steps() -> list[str]:
    """The steps the runner applies to a `--attention debx` INT8 (--target ort) file on this machine."""
    steps = ["int8-matmul"] if _family() != "ort" else []
    steps.append("layernorm-quantize")
    if int8_cpu.attention_mode() != "float32":  # amx-bf16 or avx512-bf16 here (never the emulation on its own)
        steps.append("attention-bf16")
    return steps


@pytest.fixture(scope="module")
def files(tiny_checkpoints, glue_dir, tmp_path_factory):
    """A tiny v3 exported with --attention debx (FP32) and calibrated with --target ort (INT8)."""
    from debx.calib.calibrate import CalibrateConfig, calibrate
    from debx.exporters.export import ExportConfig, export_onnx

    root = tmp_path_factory.mktemp("rewrites")
    fp32 = export_onnx(ExportConfig(tiny_checkpoints["v3"], root / "v3.debx.onnx", attention="debx",
                                    validate=False)).output
    int8 = calibrate(CalibrateConfig(model=fp32, output=root / "v3.debx.int8.onnx", task="sst2", data_dir=glue_dir,
                                     method="minmax", num_samples=16, threads=1, target="ort")).output
    return {"fp32": fp32, "int8": int8, "root": root}


def _feeds(n: int = 11):
    ids = (np.arange(2 * n, dtype=np.int64).reshape(2, n) * 7) % 90 + 5
    mask = np.ones_like(ids)
    mask[1, n // 2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


# ---------------------------------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------------------------------


def test_one_registry_of_named_steps():
    assert rewrites.NAMES == ("int8-matmul", "layernorm-quantize", "attention-bf16", "attention-casts",
                              "reference-ops")
    assert all(s.does for s in rewrites.STEPS)
    from debx.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown rewrite step 'nope'"):
        rewrites.step("nope")


def _fp16_debx_node_model():
    from debx.contract import DEBX_ATTENTION

    names = ["q", "k", "v", "pk", "pq"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT16, ["b", "n", 8] if n in "qkv" else [4, 8])
              for n in names] + [helper.make_tensor_value_info("mask", TensorProto.INT32, ["b", "n"])]
    node = helper.make_node(DEBX_ATTENTION.name, [*names, "mask"], ["out"], domain=DEBX_ATTENTION.domain,
                            num_heads=2, scale=0.25, span=2, c2p=1, p2c=1)
    graph = helper.make_graph([node], "att", inputs, [helper.make_tensor_value_info("out", TensorProto.FLOAT16, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid(DEBX_ATTENTION.domain, 1)])


def test_attention_steps_apply_once(monkeypatch):
    """An FP16 debx node gets the casts around the native kernel (or the reference without it); applied, the step
    finds nothing more to do."""
    model = _fp16_debx_node_model()
    target = rewrites.Target(_cache={"native": True})
    plan = rewrites.plan(model, target)
    assert [s.name for s in plan.run] == ["attention-casts"]
    done = rewrites.apply(plan, model, target)
    assert [(a.step, a.counts) for a in done] == [("attention-casts", {"DebxDisentangledAttention(casts)": 1})]
    assert not rewrites.plan(model, target).run  # the step sees it is already applied
    model = _fp16_debx_node_model()
    target = rewrites.Target(_cache={"native": False})
    monkeypatch.setattr(rewrites.Target, "native_reason", lambda self: "no compiler")
    done = rewrites.apply(rewrites.plan(model, target), model, target)
    assert [(a.step, a.choice) for a in done] == [("reference-ops", "native ops unavailable: no compiler")]
    assert not rewrites.plan(model, target).run


def test_named_steps_must_be_able_to_run_here():
    from test_int8_cpu import ffn_model

    from debx.errors import ConfigError

    target = rewrites.Target(_cache={"native": True, "family": ("ort", "DEBX_CPU_KERNELS=ort")})
    assert rewrites.plan(ffn_model(), target).skipped == {"int8-matmul": "family ort: DEBX_CPU_KERNELS=ort"}
    with pytest.raises(ConfigError, match="rewrite step int8-matmul cannot run here: family ort: DEBX_CPU_"):
        rewrites.plan(ffn_model(), target, ["int8-matmul"])
    target = rewrites.Target(_cache={"native": True, "family": ("amx", "forced")})
    model = ffn_model()
    done = rewrites.apply(rewrites.plan(model, target, ["int8-matmul"]), model, target)
    assert [(a.step, a.counts, a.choice) for a in done] == [
        ("int8-matmul", {"DebxMatMulInt8": 1, "DebxMatMulInt8Add": 1, "DebxMatMulInt8GeluQuantize": 1},
         "family amx: forced")]
    assert not rewrites.plan(model, target).run  # applied: nothing left for any step


@needs_native
def test_graphs_with_external_weights_are_rewritten_without_loading_them(tmp_path, monkeypatch):
    """Only the graph is rewritten and handed over; ONNX Runtime reads the weights from beside the file (before: such
    files ran as written, on ONNX Runtime's own INT8 kernels)."""
    from test_int8_cpu import ffn_model

    from debx.artifacts import save_onnx_model

    if _family() == "ort":
        pytest.skip("no native INT8 matmul family on this CPU")
    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    inline, external = tmp_path / "inline.onnx", tmp_path / "external.onnx"
    onnx.save(ffn_model(gelu="relu"), str(inline))
    save_onnx_model(ffn_model(gelu="relu"), external, data_name="external.onnx.data", size_threshold=64)
    assert onnx.load(str(external), load_external_data=False).graph.initializer[4].data_location == 1  # EXTERNAL
    x = {"x": np.random.default_rng(4).normal(0, 2, (2, 5, 192)).astype(np.float32)}
    a, b = {}, {}
    want = open_session(inline, threads=1, info=a).run(None, x)
    got = open_session(external, threads=1, info=b).run(None, x)
    assert b["rewrites"] == a["rewrites"] and [r["step"] for r in b["rewrites"]] == ["int8-matmul"]
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # session_for_model (calibration's runner for large graphs) reads the weights from model_dir the same way, and
    # writes no temporary graph file beside them any more
    from debx.runtimes.onnxruntime import session_for_model

    graph = onnx.load(str(external), load_external_data=False)
    for g, w in zip(session_for_model(graph, threads=1, model_dir=tmp_path).run(None, x), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["external.onnx", "external.onnx.data", "inline.onnx"]


def _gather_model(rows: int = 4096, width: int = 256):
    """ids -> Gather(table) -> Relu: a 4 MiB float table (read in place by the runner) and a small graph."""
    table = np.random.default_rng(5).normal(0, 1, (rows, width)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["g"]), helper.make_node("Relu", ["g"], ["out"])], "gather",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["b", "n"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["b", "n", width])],
        [onnx.numpy_helper.from_array(table, "table"), onnx.numpy_helper.from_array(np.zeros(3, np.float32), "unused")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), table


def test_read_graph_leaves_large_weights_in_the_file(tmp_path):
    """The runner reads a graph without its large inline weights: they become references to where their bytes lie in
    the file itself, which ONNX Runtime reads in place."""
    from debx.runtimes.onnxruntime import EXTERNAL_FOLDER, read_graph, session_options

    model, table = _gather_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    light = read_graph(path)
    big, small = light.graph.initializer
    assert big.data_location == TensorProto.EXTERNAL and not big.raw_data and list(big.dims) == [4096, 256]
    entries = {e.key: e.value for e in big.external_data}
    assert entries["location"] == "m.onnx" and int(entries["length"]) == table.nbytes
    with open(path, "rb") as fh:  # the reference points at the table's bytes in the file
        fh.seek(int(entries["offset"]))
        assert fh.read(table.nbytes) == table.tobytes()
    assert small.data_location == TensorProto.DEFAULT and len(small.raw_data) == 12
    assert light.ByteSize() < 4096  # what is held in memory: the graph, not the weights
    so = session_options(1)
    so.add_session_config_entry(EXTERNAL_FOLDER, str(tmp_path))
    import onnxruntime as ort

    ids = np.array([[0, 7, 4095]], np.int64)
    out = ort.InferenceSession(light.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"ids": ids})
    np.testing.assert_array_equal(out[0], np.maximum(table[ids], 0))
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage")  # not ONNX: read_onnx's one line
    from debx.errors import ConfigError

    with pytest.raises(ConfigError, match="not a readable ONNX model"):
        read_graph(tmp_path / "bad.onnx")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS read from /proc (Linux)")
def test_opening_a_file_does_not_hold_its_weights_twice(tmp_path):
    """Peak RSS of opening a file with a 64 MiB table and running it, in a fresh process: before, the runner parsed the
    whole file (the file's bytes and the parsed copy: 2 x 64 MiB) before ONNX Runtime loaded it again."""
    import subprocess
    import sys

    model, table = _gather_model(rows=16384, width=1024)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    del model, table
    code = (
        "import numpy as np, onnxruntime, onnx\n"
        "from debx.runtimes.onnxruntime import open_session\n"
        "hwm = lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024\n"
        "before = hwm()\n"
        f"s = open_session({str(path)!r}, threads=1)\n"
        "s.run(None, {'ids': np.array([[1, 2, 3]], np.int64)})\n"
        "print(hwm() - before)\n")
    grew = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                timeout=120).stdout.strip())
    assert grew < 32, f"peak RSS grew {grew:.0f} MiB opening a file with 64 MiB of weights"


# ---------------------------------------------------------------------------------------------------------------------
# Every step that ran is named: eval report and bench output
# ---------------------------------------------------------------------------------------------------------------------


@needs_native
def test_eval_report_names_every_step(files, glue_dir, monkeypatch):
    from debx.evaluate import EvalConfig, evaluate, gate_notes, kernel_notes

    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    monkeypatch.delenv("DEBX_AMX", raising=False)
    monkeypatch.delenv("DEBX_CPU_ATTENTION", raising=False)
    report = evaluate(EvalConfig(task="sst2", engine=files["int8"], data_dir=glue_dir, limit=8, progress=False)).report
    ran = report["runner"]["rewrites"]
    assert [r["step"] for r in ran] == expected_int8_steps()
    assert all(r["counts"] and all(v > 0 for v in r["counts"].values()) and r["choice"] for r in ran)
    notes = kernel_notes(report)
    assert notes[0].startswith("graph rewrites at load: ") and all(s in notes[0] for s in expected_int8_steps())
    assert notes[0] in gate_notes(report)  # and so in report.md
    json.dumps(report)  # the report stays JSON

    # an environment variable's choice is named too
    monkeypatch.setenv("DEBX_CPU_KERNELS", "ort")
    report = evaluate(EvalConfig(task="sst2", engine=files["int8"], data_dir=glue_dir, limit=8, progress=False)).report
    assert "int8-matmul" not in [r["step"] for r in report["runner"]["rewrites"]]
    assert report["runner"]["rewrites_skipped"]["int8-matmul"] == "family ort: DEBX_CPU_KERNELS=ort"
    assert "off: int8-matmul (family ort: DEBX_CPU_KERNELS=ort)" in kernel_notes(report)[0]

    # the attention's mode: forced, the step and the kernel line name it (the emulation runs on any AVX-512 CPU)
    if int8_cpu.attention_mode_available("avx512-bf16-emulated"):
        monkeypatch.setenv("DEBX_CPU_ATTENTION", "avx512-bf16-emulated")
        report = evaluate(EvalConfig(task="sst2", engine=files["int8"], data_dir=glue_dir, limit=8,
                                     progress=False)).report
        (step,) = [r for r in report["runner"]["rewrites"] if r["step"] == "attention-bf16"]
        assert step["choice"] == "mode avx512-bf16-emulated: DEBX_CPU_ATTENTION=avx512-bf16-emulated"
        assert report["runner"]["attention_kernels"] == "avx512-bf16-emulated"
        assert "; attention avx512-bf16-emulated" in kernel_notes(report)[1]
        monkeypatch.delenv("DEBX_CPU_ATTENTION")

    # a debx-attention FP32 file runs as written on the native kernel, and says so; without the native library its
    # attention nodes move onto the NumPy reference, and that step is named
    monkeypatch.delenv("DEBX_CPU_KERNELS")
    report = evaluate(EvalConfig(task="sst2", engine=files["fp32"], data_dir=glue_dir, limit=8, progress=False)).report
    assert report["runner"]["rewrites"] == []
    assert kernel_notes(report)[0] == "graph rewrites at load: none (the file runs as written)"
    monkeypatch.setenv("DEBX_NATIVE_OPS", "0")
    with pytest.warns(UserWarning, match="NumPy reference"):
        report = evaluate(EvalConfig(task="sst2", engine=files["fp32"], data_dir=glue_dir, limit=8,
                                     progress=False)).report
    (step,) = report["runner"]["rewrites"]
    assert step["step"] == "reference-ops" and step["choice"] == "native ops unavailable: disabled by DEBX_NATIVE_OPS=0"
    assert "reference-ops" in kernel_notes(report)[0]


@needs_native
def test_bench_names_every_step(files, monkeypatch, capsys):
    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    monkeypatch.delenv("DEBX_AMX", raising=False)
    rc, out, err = run_main(monkeypatch, capsys, "bench", "-e", files["int8"], "-e", files["fp32"], "--batch", "1",
                            "--seq", "8", "--iters", "1", "--warmup", "0", "--threads", "1")
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if "graph rewrites at load" in ln]
    assert len(lines) == 2
    assert lines[0].startswith(f"{files['int8'].stem}") or files["int8"].name.split(".onnx")[0] in lines[0]
    assert all(s in lines[0] for s in expected_int8_steps())
    assert lines[1].endswith("graph rewrites at load: none (the file runs as written)")


# ---------------------------------------------------------------------------------------------------------------------
# Ahead of time: `debx rewrite`
# ---------------------------------------------------------------------------------------------------------------------


@needs_native
def test_ahead_of_time_file_equals_the_in_memory_rewrite(files, monkeypatch, capsys):
    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    monkeypatch.delenv("DEBX_AMX", raising=False)
    out = files["root"] / "v3.debx.int8.cpu.onnx"
    rc, stdout, err = run_main(monkeypatch, capsys, "rewrite", files["int8"], "-o", out)
    assert rc == 0, err
    assert all(f"{s}: " in stdout for s in expected_int8_steps()) and f"wrote {out}" in stdout
    side = json.loads(out.with_name(out.name + ".json").read_text())
    in_memory: dict = {}
    want = open_session(files["int8"], threads=1, info=in_memory).run(None, _feeds())[0]
    assert side["rewrites"] == in_memory["rewrites"]  # the same steps, counts and choices
    assert side["precision"] == "int8" and side["calibration"] and side["rewritten_from"]["file"] == str(files["int8"])

    ahead: dict = {}
    real = onnx.ModelProto.SerializeToString
    serialized = []

    def serialize(self, *a):
        data = real(self, *a)
        serialized.append(len(data))
        return data

    monkeypatch.setattr(onnx.ModelProto, "SerializeToString", serialize)
    got = open_session(out, threads=1, info=ahead).run(None, _feeds())[0]
    assert ahead["rewrites"] == []  # runs as it is: no rewrite
    # and no copy of its weights: at most the graph is handed over, with references to the weights in the file
    assert all(n < out.stat().st_size // 4 for n in serialized), (serialized, out.stat().st_size)
    assert ahead["int8_kernels"] == in_memory["int8_kernels"] and ahead["int8_cpu"] == in_memory["int8_cpu"]
    np.testing.assert_array_equal(got, want)

    from debx.runtimes.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(out, threads=1) as runner:
        described = runner.describe()
    assert described["rewrites"] == [] and [r["step"] for r in described["rewritten_ahead"]] == expected_int8_steps()
    assert "applied ahead of time (sidecar): " + ", ".join(expected_int8_steps()) in rewrites.summary(described)

    # on a machine that lacks what the file names: one line, not ONNX Runtime's kernel error
    from debx.errors import ConfigError

    family = _family()
    if family != "ort":
        monkeypatch.setattr(int8_cpu, "family_available", lambda name: name == "ort")
        with pytest.raises(ConfigError, match=f"was rewritten for the {family} INT8 kernels, which this CPU cannot"):
            open_session(out, threads=1)
    monkeypatch.setenv("DEBX_NATIVE_OPS", "0")
    with pytest.raises(ConfigError, match="has debx's native INT8 CPU ops .* the native library is unavailable here"):
        open_session(out, threads=1)


@needs_native
def test_a_rewrite_at_load_holds_no_extra_copy(files, monkeypatch):
    """Memory: the graph is rewritten in place and serialized once (before: the INT8 rewrite's graph, a copy for the
    attention nodes and the bytes were alive together: v3-base INT8 peaked at 2753 MB, now 1764 MB)."""
    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    calls = {"CopyFrom": 0, "SerializeToString": 0}
    for name in calls:
        real = getattr(onnx.ModelProto, name)

        def counted(self, *a, _name=name, _real=real):
            calls[_name] += 1
            return _real(self, *a)

        monkeypatch.setattr(onnx.ModelProto, name, counted)
    info: dict = {}
    open_session(files["int8"], threads=1, info=info)
    assert [r["step"] for r in info["rewrites"]] == expected_int8_steps()
    assert calls == {"CopyFrom": 0, "SerializeToString": 1}


def test_rewrite_user_errors_are_one_line(files, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DEBX_CPU_KERNELS", raising=False)
    folder = tmp_path / "dir"
    folder.mkdir()
    fp32_ahead = tmp_path / "fp32.onnx"
    cases = [
        ((tmp_path / "missing.onnx", "-o", tmp_path / "o.onnx"), "no such ONNX file"),
        ((files["int8"], "-o", tmp_path / "o.onnx", "--steps", "int8-matmul,nope"), "unknown rewrite step 'nope'"),
        ((files["int8"], "-o", files["int8"]), "is the input"),
        ((files["int8"], "-o", folder), "a folder"),
        ((files["fp32"], "-o", fp32_ahead), "no rewrite step changes it here"),  # runs as written already
    ]
    if not native_ops.available():
        cases = cases[:4]
    for args, message in cases:
        rc, out, err = run_main(monkeypatch, capsys, "rewrite", *args)
        assert rc == 2, (args, out, err)
        assert err.startswith("debx: error: ") and message in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]  # nothing written, nothing half-written
