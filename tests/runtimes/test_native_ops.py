"""The native ONNX Runtime custom-op library (plugins/ortOps + disentangledAttentionCpu): ABI slots, parity with the
NumPy reference on every config shape, constant-table and input-table paths, errors, and how sessions pick it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from debx.errors import MissingDependencyError
from debx.runtimes import native_ops
from debx.runtimes.reference_ops import DEBX_DOMAIN, DEBX_OP, adapt_for_ort, debx_attention_reference

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

# (B, N, H, D, span, position_buckets, max_relative_positions, c2p, p2c)
CASES = [
    (3, 130, 4, 64, 256, 256, 512, 1, 1),  # v3-base proportions, padded and fully padded rows
    (1, 600, 2, 64, 256, 256, 512, 1, 1),  # log buckets reached, N > span
    (2, 37, 3, 8, 16, 0, 16, 1, 1),  # v1: linear, N > span (clamped slots), odd sizes everywhere
    (2, 64, 2, 16, 32, 64, 128, 1, 0),  # c2p only
    (2, 64, 2, 16, 32, 0, 32, 0, 1),  # p2c only
    (1, 70, 2, 24, 16, 32, 64, 1, 1),  # max_rel != 2 * buckets, head size not a multiple of 16
    (2, 1, 2, 4, 8, 8, 16, 1, 1),  # one token
    (2, 16, 2, 16, 8, 16, 32, 0, 0),  # no relative terms
]


@pytest.fixture(scope="module")
def library() -> str:
    try:
        return str(native_ops.build())
    except MissingDependencyError as e:  # pragma: no cover - the CI machine has g++
        pytest.fail(f"the native ops must build on the CI machine: {e}")


def _graph(attrs: dict, hd: int, p: int, tables: tuple[np.ndarray, np.ndarray] | None = None):
    node = helper.make_node(DEBX_OP, ["q", "k", "v", "pk", "pq", "mask"], ["out"], domain=DEBX_DOMAIN, **attrs)
    fl = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    inputs = [fl("q", ["B", "N", hd]), fl("k", ["B", "N", hd]), fl("v", ["B", "N", hd])]
    inits = []
    if tables is None:
        inputs += [fl("pk", [p, hd]), fl("pq", [p, hd])]
    else:
        inits = [numpy_helper.from_array(tables[0], "pk"), numpy_helper.from_array(tables[1], "pq")]
    inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT32, ["B", "N"]))
    g = helper.make_graph([node], "g", inputs, [fl("out", ["B", "N", hd])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DEBX_DOMAIN, 1)],
                             ir_version=9)


def _session(model, library: str, threads: int = 2):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _data(B, N, HD, P, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((B, N, HD)).astype(np.float32) for _ in range(3))
    pk, pq = (rng.standard_normal((P, HD)).astype(np.float32) for _ in range(2))
    mask = np.ones((B, N), np.int32)
    if B > 1:
        mask[1, max(1, N // 2):] = 0
    if B > 2:
        mask[2, :] = 0
    return q, k, v, pk, pq, mask


def test_abi_slots_match_the_running_onnxruntime(library):
    """DEBX_ORT_OPS_SELFTEST=1 makes registration check the status and build-info slots of ortAbi.h first."""
    code = ("import onnxruntime as ort, sys; so = ort.SessionOptions(); so.register_custom_ops_library(sys.argv[1]); "
            "print('registered')")
    proc = subprocess.run([sys.executable, "-c", code, library], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEBX_ORT_OPS_SELFTEST": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "debx ORT ABI self-test passed: ORT Build Info" in proc.stderr
    assert "registered" in proc.stdout


@pytest.mark.parametrize("B, N, H, D, span, buckets, max_rel, c2p, p2c", CASES)
def test_native_matches_the_reference(library, B, N, H, D, span, buckets, max_rel, c2p, p2c):
    HD, P = H * D, 2 * span
    attrs = dict(num_heads=H, scale=float(1 / np.sqrt(3 * D)), span=span, position_buckets=buckets,
                 max_relative_positions=max_rel, c2p=c2p, p2c=p2c)
    q, k, v, pk, pq, mask = _data(B, N, HD, P)
    want = debx_attention_reference(q, k, v, pk, pq, mask, **attrs)
    fed = _session(_graph(attrs, HD, P), library).run(None, dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=mask))[0]
    const = _session(_graph(attrs, HD, P, (pk, pq)), library, threads=1).run(None, dict(q=q, k=k, v=v, mask=mask))[0]
    for got in (fed, const):  # tables as inputs (transposed per task) and as initializers (transposed at load)
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_the_native_kernel_uses_the_positions(library):
    """A kernel that ignored a table would still match on some inputs: changing pos_key must change the output."""
    attrs = dict(num_heads=2, scale=0.2, span=16, position_buckets=32, max_relative_positions=64, c2p=1, p2c=1)
    q, k, v, pk, pq, mask = _data(1, 20, 32, 32)
    s = _session(_graph(attrs, 32, 32), library)
    a = s.run(None, dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=mask))[0]
    b = s.run(None, dict(q=q, k=k, v=v, pk=pk * 2, pq=pq, mask=mask))[0]
    assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("threads", [1, 2])
def test_trailing_padding_is_skipped_without_changing_a_float(library, threads):
    """The float32 kernel computes only the tokens' scores when the mask is a run of ones and then zeros, and the
    padded rows once. Each token's output must be bit for bit the one of the same tokens without padding (the padded
    keys add exactly 0), every padded row the uniform average of V, and a mask with a hole matches the reference."""
    attrs = dict(num_heads=2, scale=float(1 / np.sqrt(3 * 16)), span=32, position_buckets=64, max_relative_positions=128,
                 c2p=1, p2c=1)
    N, L, HD, P = 53, 37, 32, 64
    q, k, v, pk, pq, _ = _data(1, N, HD, P, seed=3)
    s = _session(_graph(attrs, HD, P), library, threads=threads)
    mask = np.zeros((1, N), np.int32)
    mask[0, :L] = 1
    padded = s.run(None, dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=mask))[0]
    alone = s.run(None, dict(q=q[:, :L], k=k[:, :L], v=v[:, :L], pk=pk, pq=pq, mask=mask[:, :L]))[0]
    assert np.array_equal(padded[:, :L], alone)
    want = debx_attention_reference(q, k, v, pk, pq, mask, **attrs)
    np.testing.assert_allclose(padded, want, atol=2e-6, rtol=0)
    uniform = v.reshape(N, 2, 16).mean(axis=0).reshape(HD)
    np.testing.assert_allclose(padded[0, L:], np.broadcast_to(uniform, (N - L, HD)), atol=1e-6)
    holed = mask.copy()
    holed[0, 5] = 0
    got = s.run(None, dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=holed))[0]
    np.testing.assert_allclose(got, debx_attention_reference(q, k, v, pk, pq, holed, **attrs), atol=2e-6, rtol=0)


def test_padded_keys_count_where_the_scores_come_near_the_mask_fill(library):
    """exp(fill - max) vanishes only when a real score exceeds the mask fill (-65504) by ~100: with every real score
    at -65500 the padded keys carry weight e^-4 each, so skipping them would change the output."""
    attrs = dict(num_heads=1, scale=1.0, span=4, position_buckets=0, max_relative_positions=8, c2p=1, p2c=1)
    N, L, HD, P = 8, 5, 4, 8
    q = np.zeros((1, N, HD), np.float32)
    k = np.zeros((1, N, HD), np.float32)
    q[..., 0], k[..., 0] = 256.0, -65500.0 / 256.0
    v = np.random.default_rng(0).standard_normal((1, N, HD)).astype(np.float32)
    pk = pq = np.zeros((P, HD), np.float32)
    mask = np.zeros((1, N), np.int32)
    mask[0, :L] = 1
    got = _session(_graph(attrs, HD, P), library).run(None, dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=mask))[0]
    want = debx_attention_reference(q, k, v, pk, pq, mask, **attrs)
    without_padded_keys = np.broadcast_to(v[0, :L].mean(axis=0), (L, HD))
    assert np.abs(want[0, :L] - without_padded_keys).max() > 1e-3  # the case is the one it claims to be
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change, message", [
    (lambda f: f.update(k=f["k"][:, :-1]), "key shape"),
    (lambda f: f.update(mask=f["mask"][:, :-1]), "mask must be (B, N)"),
    (lambda f: f.update(pk=f["pk"][:-1]), "pos_key and pos_query shapes differ"),
    (lambda f: f.update(pk=f["pk"][:, :-2], pq=f["pq"][:, :-2]), "pos_key must be (P, 32)"),
    (lambda f: f.update(pk=f["pk"][:-2], pq=f["pq"][:-2]), "pos_key/pos_query must have 2*span"),
])
def test_bad_inputs_fail_with_the_reason(library, change, message):
    attrs = dict(num_heads=2, scale=0.2, span=16, position_buckets=32, max_relative_positions=64, c2p=1, p2c=1)
    q, k, v, pk, pq, mask = _data(2, 10, 32, 32)
    feeds = dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=mask)
    change(feeds)
    model = _graph(attrs, 32, 32)
    for vi in model.graph.input:  # let ONNX Runtime accept the wrong shapes so the op itself must refuse them
        for d in vi.type.tensor_type.shape.dim:
            d.dim_param = d.dim_param or "any"
    with pytest.raises(Exception) as err:
        _session(model, library).run(None, feeds)
    assert DEBX_OP in str(err.value)
    assert message.split("/")[0] in str(err.value) or message in str(err.value)


def test_missing_attribute_is_refused_at_load(library):
    attrs = dict(num_heads=2, scale=0.2, span=16, position_buckets=32, max_relative_positions=64, c2p=1)
    with pytest.raises(Exception, match="missing int attribute p2c"):
        _session(_graph(attrs, 32, 32), library)


def test_no_compiler_means_a_clear_reason(monkeypatch, tmp_path):
    monkeypatch.setattr(native_ops, "_compiler", lambda: None)
    with pytest.raises(MissingDependencyError, match="C\\+\\+17 compiler.*apt-get install g\\+\\+"):
        native_ops.build(tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_no_cmake_means_a_clear_reason(monkeypatch, tmp_path):
    """The build is CMake's (plugins/CMakeLists.txt): without it, one line saying what to install; a probe says the
    same and builds nothing."""
    monkeypatch.setattr(native_ops, "_cmake", lambda: None)
    monkeypatch.setenv("DEBX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MissingDependencyError, match="built with CMake.*apt-get install cmake") as e:
        native_ops.build(tmp_path / "out")
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "out").iterdir())
    native_ops.forget()
    try:
        assert not native_ops.available() and "apt-get install cmake" in native_ops.unavailable_reason()
    finally:
        native_ops.forget()


def test_build_is_cached_and_atomic(tmp_path):
    first = native_ops.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert native_ops.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir()) == [native_ops.LIBRARY, native_ops.LIBRARY + ".sha256"]
    assert native_ops.verified(first)


@pytest.fixture
def fake_compiler(monkeypatch):
    """native_ops.build with a stand-in compile step (writes known bytes): the cache logic without a real build."""
    calls = []

    def compile_(tools, source, output, verbose):
        calls.append(output)
        with open(output, "wb") as f:
            f.write(b"\x7fELF fake library " * 1000 + str(len(calls)).encode())

    monkeypatch.setattr(native_ops, "_compile", compile_)
    return calls


@pytest.mark.parametrize("damage", ["truncated", "foreign", "no digest", "empty"])
def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path, fake_compiler, damage):
    lib = native_ops.build(tmp_path)
    assert len(fake_compiler) == 1 and native_ops.build(tmp_path) == lib and len(fake_compiler) == 1
    good = lib.read_bytes()
    if damage == "truncated":
        lib.write_bytes(good[:4000])
    elif damage == "foreign":
        lib.write_bytes(b"\x7fELF someone else's library" + b"\0" * len(good))
    elif damage == "no digest":
        (tmp_path / (native_ops.LIBRARY + ".sha256")).unlink()
    else:
        lib.write_bytes(b"")
    assert not native_ops.verified(lib)
    assert native_ops.build(tmp_path) == lib and len(fake_compiler) == 2  # rebuilt
    assert native_ops.verified(lib) and lib.read_bytes() != good[:4000]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_cache_folders_are_private(tmp_path, monkeypatch, fake_compiler):
    monkeypatch.setenv("DEBX_CACHE", str(tmp_path / "cache"))
    lib = native_ops.build()
    for d in (native_ops.cache_root(), lib.parent):
        assert (d.stat().st_mode & 0o777) == 0o700, d
    os.chmod(lib.parent, 0o777)  # group/world-writable: repaired, then used
    os.chmod(native_ops.cache_root(), 0o775)
    assert native_ops.build() == lib and len(fake_compiler) == 1
    assert (lib.parent.stat().st_mode & 0o777) == 0o700 and (native_ops.cache_root().stat().st_mode & 0o777) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user needs root")
def test_cache_folder_of_another_user_is_refused(tmp_path, fake_compiler):
    os.chown(tmp_path, 12345, 12345)
    with pytest.raises(MissingDependencyError, match="another user"):
        native_ops.build(tmp_path)
    assert not fake_compiler and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_truncated_or_foreign_cached_library_never_runs(tmp_path):
    """End to end with the real compiler: a truncated cached library (SIGBUS when loaded) and a foreign one (its
    constructor runs when loaded) are rebuilt by the next process, which then runs normally."""
    cache = tmp_path / "cache"
    env = {**os.environ, "DEBX_CACHE": str(cache)}
    probe = [sys.executable, "-c", "from debx.runtimes import native_ops as n; print(n.available(), n.library_path())"]
    first = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0 and first.stdout.startswith("True"), first.stderr
    lib = Path(first.stdout.split()[1])
    good = lib.read_bytes()
    marker = tmp_path / "FOREIGN_RAN"
    src = tmp_path / "foreign.c"
    src.write_text('#include <stdio.h>\n__attribute__((constructor)) static void f(void) '
                   f'{{ FILE *x = fopen("{marker}", "w"); if (x) fclose(x); }}\n')
    foreign = tmp_path / "foreign.so"
    subprocess.run([native_ops._compiler(), "-shared", "-fPIC", "-x", "c", str(src), "-o", str(foreign)], check=True)
    for planted in (good[: len(good) // 3], foreign.read_bytes()):
        lib.write_bytes(planted)
        p = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0 and p.stdout.startswith("True"), (p.returncode, p.stderr[-500:])
        assert native_ops.verified(lib) and lib.read_bytes() != planted
        assert not marker.exists()
    assert subprocess.run([sys.executable, "-c", f"import ctypes; ctypes.CDLL({str(foreign)!r})"]).returncode == 0
    assert marker.exists()  # the planted library is live: the checks above mean something


def test_switch_off_falls_back_to_the_reference(monkeypatch):
    monkeypatch.setenv("DEBX_NATIVE_OPS", "0")
    assert not native_ops.available() and "DEBX_NATIVE_OPS=0" in native_ops.unavailable_reason()


def test_adapter_keeps_fp32_nodes_and_casts_fp16_ones():
    attrs = dict(num_heads=2, scale=0.2, span=16, position_buckets=32, max_relative_positions=64, c2p=1, p2c=1)
    pk = np.zeros((32, 32), np.float32)
    fp32 = _graph(attrs, 32, 32, (pk, pk))
    same = adapt_for_ort(fp32, native=True)
    assert [(n.domain, n.op_type) for n in same.graph.node] == [(DEBX_DOMAIN, DEBX_OP)]
    fp16 = _graph(attrs, 32, 32, (pk.astype(np.float16), pk.astype(np.float16)))
    cast = adapt_for_ort(fp16, native=True)
    ops = [(n.domain, n.op_type) for n in cast.graph.node]
    assert (DEBX_DOMAIN, DEBX_OP) in ops and ("", "Cast") in ops and ("", "CastLike") in ops
    ref = adapt_for_ort(fp32, native=False)
    assert ("ai.onnx.contrib", DEBX_OP) in [(n.domain, n.op_type) for n in ref.graph.node]
