"""The attention op's mixed-precision (bf16) mode in each instruction family (plugins/disentangledAttention/
disentangledAttentionBf16.h): amx-bf16 (AMX tiles), avx512-bf16 (VDPBF16PS) and avx512-bf16-emulated (avx512-bf16's
kernel source compiled for AVX-512 F/BW/VL/DQ, its two bf16 instructions in software).

The emulated instructions are held bit-exact to an exact model of Intel's pseudo-code (rational arithmetic, below),
so the emulated mode runs avx512-bf16's code path on CPUs without AVX-512 BF16 (this CI's Ice Lake); the real
instructions are held to the same model where the CPU has them, and skipped with the reason elsewhere. The op in every
mode that runs here is held to the accuracy contract of the bf16 mode (2% of the output scale of the float reference)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

from debx.runtimes import int8_cpu, native_ops

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

MODES = int8_cpu.ATTENTION_MODES  # the op's bf16 attribute per mode
WHY_NOT = {
    "amx-bf16": "this CPU has no AMX-BF16 tiles (or no C++ compiler)",
    "avx512-bf16": "this CPU has no AVX-512 BF16 (VDPBF16PS; the avx512-bf16-emulated tests run its code here)",
    "avx512-bf16-emulated": "this CPU has no AVX-512 F/BW/VL/DQ (or no C++ compiler)",
}


def runs_here(mode: str) -> bool:
    return native_ops.available() and native_ops.attention_bf16_available(MODES[mode])


def mode_param(mode: str):
    return pytest.param(mode, marks=pytest.mark.skipif(not runs_here(mode), reason=WHY_NOT[mode]))


LANE_MODES = [mode_param("avx512-bf16"), mode_param("avx512-bf16-emulated")]  # the two with the lane instructions

# ---------------------------------------------------------------------------------------------------------------------
# The instructions, modelled exactly from Intel's pseudo-code
# ---------------------------------------------------------------------------------------------------------------------

DEFAULT_NAN = 0xFFC00000  # x86's "real indefinite": inf x 0, inf - inf


def model_convert(x_bits: np.ndarray) -> np.ndarray:
    """VCVTNEPS2BF16's convert_fp32_to_bfloat16 per float32 bit pattern: zero/denormal -> zero of the sign; NaN ->
    the top half with the quiet bit (bit 6) set; infinity and normal numbers: round to nearest even by an integer
    add of 0x7FFF + the kept lsb."""
    u = x_bits.astype(np.uint64)
    exp, man = (u >> 23) & 0xFF, u & 0x7FFFFF
    top = u >> 16
    out = ((u + 0x7FFF + (top & 1)) >> 16) & 0xFFFF
    out = np.where(exp == 0, top & 0x8000, out)
    out = np.where((exp == 0xFF) & (man != 0), top | 0x40, out)
    return out.astype(np.uint16)


def _decode(bits: int):
    """float32 bits -> ("nan",), ("inf", sign) or ("num", sign, magnitude); denormals are zero (DAZ)."""
    sign, exp, man = bits >> 31, (bits >> 23) & 0xFF, bits & 0x7FFFFF
    if exp == 0xFF:
        return ("nan",) if man else ("inf", sign)
    if exp == 0:
        return ("num", sign, Fraction(0))
    return ("num", sign, Fraction(man | 0x800000) * Fraction(2) ** (exp - 150))


def _round_ftz(sign: int, mag: Fraction) -> int:
    """Round a non-zero exact value to float32 (nearest even) with x86's flush to zero: a result that is tiny after
    rounding to 24 bits with unbounded exponent becomes a zero of its sign; past the largest float: infinity."""
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if Fraction(2) ** e > mag:
        e -= 1
    scaled = mag / Fraction(2) ** (e - 23)  # in [2^23, 2^24)
    m, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest > scaled.denominator or (2 * rest == scaled.denominator and m & 1):
        m += 1
    if m == 1 << 24:
        m, e = 1 << 23, e + 1
    if e < -126:
        return sign << 31
    if e > 127:
        return (sign << 31) | 0x7F800000
    return (sign << 31) | ((e + 127) << 23) | (m - (1 << 23))


def _fma(acc: int, a: int, b: int) -> int | None:
    """acc + a * b (float32 bits, none NaN), one rounding, DAZ in, FTZ out; None for an invalid operation."""
    A, B, C = _decode(a), _decode(b), _decode(acc)
    ps = A[1] ^ B[1]
    if A[0] == "inf" or B[0] == "inf":
        if (A[0] == "num" and A[2] == 0) or (B[0] == "num" and B[2] == 0):
            return None  # inf x 0
        if C[0] == "inf" and C[1] != ps:
            return None  # inf - inf
        return (ps << 31) | 0x7F800000
    if C[0] == "inf":
        return acc
    p, c = (-1) ** ps * A[2] * B[2], (-1) ** C[1] * C[2]
    total = p + c
    if total == 0:  # -0 only from (-0) + (-0); an exact cancellation is +0 when rounding to nearest
        return (ps & C[1]) << 31 if p == 0 and c == 0 else 0
    return _round_ftz(int(total < 0), abs(total))


def model_dot(acc: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """VDPBF16PS per float32 lane i: acc += a[2i+1] b[2i+1], then acc += a[2i] b[2i], each one FMA (round to nearest
    even, input denormals as zero, output denormals flushed). A NaN result is the quieted NaN of the first of a low,
    b low, a high, b high, acc that is one (Intel's NaN priorities), else the default NaN."""
    out = np.empty_like(acc)
    for i in range(acc.size):
        lo_a, hi_a, lo_b, hi_b = (int(v) << 16 for v in (a[2 * i], a[2 * i + 1], b[2 * i], b[2 * i + 1]))
        c = int(acc[i])
        nans = [v for v in (lo_a, lo_b, hi_a, hi_b, c) if _decode(v)[0] == "nan"]
        if nans:
            out[i] = nans[0] | 0x00400000
            continue
        step = _fma(c, hi_a, hi_b)
        step = None if step is None else _fma(step, lo_a, lo_b)
        out[i] = DEFAULT_NAN if step is None else step
    return out


def test_the_model_knows_the_documented_cases():
    """Hand-worked cases, so the model is not only checked against the code it checks."""
    f32 = lambda x: int(np.array(x, np.float32).view(np.uint32))  # noqa: E731
    one, tiny = f32(1.0), f32(2.0**-126)
    # 1 + 2^-24 is a tie: to even (1.0); each product is its own rounding, so two such products still give 1.0
    assert model_dot(np.array([one], np.uint32), *(np.array([0x3980, 0x3980], np.uint16),) * 2)[0] == one
    # 2^-126 - 2^-150: representable with an unbounded exponent, so tiny after rounding: flushed to +0; 2^-126 - 2^-152
    # rounds to 2^-126 first, so it stays (the rule of x86's flush to zero, checked on an Ice Lake with MXCSR.FTZ)
    assert model_dot(np.array([tiny], np.uint32), np.array([0, 0x1A00], np.uint16), np.array([0, 0x9A00], np.uint16))[0] == 0
    assert model_dot(np.array([tiny], np.uint32), np.array([0, 0x1980], np.uint16),
                     np.array([0, 0x9980], np.uint16))[0] == tiny
    # inf x 0 -> the default NaN; a NaN in a low element beats one in a high element
    assert model_dot(np.array([0], np.uint32), np.array([0, 0x7F80], np.uint16), np.array([0, 0], np.uint16))[0] == DEFAULT_NAN
    assert model_dot(np.array([0], np.uint32), np.array([0x7F81, 0x7F82], np.uint16),
                     np.array([0, 0], np.uint16))[0] == 0x7FC10000
    # the largest float rounds up to infinity; a denormal goes to a zero of its sign; a signalling NaN is quieted
    assert list(model_convert(np.array([0x7F7FFFFF, 0x807FFFFF, 0x7F800001, 0x3F808000, 0x3F818000], np.uint32))) == [
        0x7F80, 0x8000, 0x7FC0, 0x3F80, 0x3F82]


def _convert_inputs(rng) -> np.ndarray:
    special = [0, 0x80000000, 0x7F800000, 0xFF800000, 0x7F800001, 0x7FC00000, 0xFFFFFFFF, 0x7FBFFFFF, 0x7F7FFFFF,
               0xFF7FFFFF, 0x7F7F8000, 0x7F7E8000, 0x00800000, 0x807FFFFF, 0x00000001, 0x3F808000, 0x3F818000,
               0x3F807FFF, 0x3F808001]
    high = rng.integers(0, 1 << 16, 4096, dtype=np.uint32) << 16
    ties = high | 0x8000  # exactly half way, even and odd kept halves alike
    near = high | rng.choice([0x7FFF, 0x8001, 0x0001, 0xFFFF], 4096).astype(np.uint32)
    denormal = rng.integers(0, 1 << 23, 1024, dtype=np.uint32) | (rng.integers(0, 2, 1024, dtype=np.uint32) << 31)
    normal = np.random.default_rng(1).standard_normal(4096).astype(np.float32).view(np.uint32)
    x = np.concatenate([special, rng.integers(0, 1 << 32, 8192, dtype=np.uint32), ties, near, denormal, normal])
    return np.concatenate([x, np.zeros(-x.size % 32, np.uint32)]).astype(np.uint32)


def _dot_inputs(rng):
    n = 2048
    as_bf16 = lambda v: model_convert(np.asarray(v, np.float32).view(np.uint32))  # noqa: E731
    # every bf16 pattern (NaNs, infinities, denormals, products that overflow or underflow float32)
    a = [rng.integers(0, 1 << 16, 2 * n, dtype=np.uint16)]
    b = [rng.integers(0, 1 << 16, 2 * n, dtype=np.uint16)]
    acc = [rng.integers(0, 1 << 32, n, dtype=np.uint32)]
    # the attention's range: rounding in every lane
    a.append(as_bf16(rng.standard_normal(2 * n)))
    b.append(as_bf16(rng.standard_normal(2 * n)))
    acc.append((rng.standard_normal(n) * 4).astype(np.float32).view(np.uint32))
    # cancellation to exact zeros and to tiny results, and denormal accumulators
    va, vb = as_bf16(rng.standard_normal(2 * n) * 2.0**-60), as_bf16(rng.standard_normal(2 * n) * 2.0**-60)
    prod = (va.astype(np.uint32) << 16).view(np.float32)[1::2] * (vb.astype(np.uint32) << 16).view(np.float32)[1::2]
    a.append(va)
    b.append(vb)
    acc.append(np.where(rng.random(n) < 0.5, -prod, rng.standard_normal(n).astype(np.float32) * 2.0**-125)
               .astype(np.float32).view(np.uint32))
    denormal_acc = rng.integers(1, 1 << 23, n, dtype=np.uint32) | (rng.integers(0, 2, n, dtype=np.uint32) << 31)
    a.append(as_bf16(rng.standard_normal(2 * n) * 2.0**-70))
    b.append(as_bf16(rng.standard_normal(2 * n) * 2.0**-70))
    acc.append(denormal_acc)
    # hand-made: ties in each step, flush after rounding, inf x 0, inf - inf, NaN priorities, overflow
    cases = [  # acc, (a low, a high), (b low, b high)
        (0x3F800000, (0x3980, 0x3980), (0x3980, 0x3980)), (0x3F800001, (0, 0x3980), (0, 0x3980)),
        # 2^-126 - 2^-150 and - 2^-151 - 2^-152: flushed; 2^-126 - 2^-152: rounds to 2^-126 (as x86's FTZ does)
        (0x00800000, (0, 0x1A00), (0, 0x9A00)), (0x00800000, (0, 0x19C0), (0, 0x9A00)),
        (0x00800000, (0, 0x1980), (0, 0x9980)), (0x00800000, (0, 0x19FF), (0, 0x9A00)),
        (0x00800000, (0x1A00, 0), (0x9A00, 0)), (0x80800000, (0, 0x1A00), (0, 0x1A00)),
        (0, (0, 0x7F80), (0, 0)), (0, (0x7F80, 0x7F80), (0x3F80, 0xBF80)), (0x7F800000, (0, 0x7F80), (0, 0xBF80)),
        (0x7FC00001, (0x7F81, 0x7F82), (0x7F83, 0x7F84)), (0x7FC00001, (0, 0x7F82), (0x7F83, 0x7F84)),
        (0x7FC00001, (0, 0x7F82), (0, 0x7F84)), (0x7FC00001, (0, 0), (0, 0x7F84)), (0x7F800001, (0, 0), (0, 0)),
        (0x7F7FFFFF, (0, 0x7F7F), (0, 0x3F80)), (0xFF7FFFFF, (0xFF7F, 0), (0x4000, 0)), (0x80000000, (0x8000, 0), (0, 0)),
        (0x80000000, (0x8000, 0x8000), (0, 0)), (0x80000000, (0x0001, 0x8001), (0x0001, 0x0001)),
    ]
    cases += [(0, (0, 0), (0, 0))] * (-len(cases) % 16)
    acc.append(np.array([c[0] for c in cases], np.uint32))
    a.append(np.array([v for c in cases for v in c[1]], np.uint16))
    b.append(np.array([v for c in cases for v in c[2]], np.uint16))
    return np.concatenate(acc), np.concatenate(a), np.concatenate(b)


def _library():
    return ctypes.CDLL(str(native_ops.library_path()))


def run_dot(mode: str, acc, a, b) -> np.ndarray:
    out = np.ascontiguousarray(acc.copy())
    fn = _library().debx_ort_ops_bf16_dot
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    assert fn(MODES[mode], out.ctypes.data, np.ascontiguousarray(a).ctypes.data,
              np.ascontiguousarray(b).ctypes.data, out.size) == 0
    return out


def run_convert(mode: str, x) -> np.ndarray:
    out = np.zeros(x.size, np.uint16)
    fn = _library().debx_ort_ops_bf16_convert
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    assert fn(MODES[mode], np.ascontiguousarray(x).ctypes.data, out.ctypes.data, x.size) == 0
    return out


def _mismatches(got, want) -> str:
    bad = np.flatnonzero(got != want)
    return f"{bad.size} lanes differ, first at {bad[:5].tolist()}: got {[hex(v) for v in got[bad[:5]]]}, " \
           f"want {[hex(v) for v in want[bad[:5]]]}"


@pytest.mark.parametrize("mode", LANE_MODES)
def test_convert_is_bit_exact(mode):
    """VCVTNE2PS2BF16 (emulated here; the instruction where the CPU has it) against the pseudo-code, on every class of
    float: exact ties with even and odd kept halves, their neighbours, denormals, zeros, infinities, quiet and
    signalling NaNs with payloads, the largest floats (which round to infinity), random bit patterns."""
    x = _convert_inputs(np.random.default_rng(0))
    got, want = run_convert(mode, x), model_convert(x)
    assert np.array_equal(got, want), _mismatches(got, want)


@pytest.mark.parametrize("mode", LANE_MODES)
def test_dot_is_bit_exact(mode):
    """VDPBF16PS against the exact model: products of every bf16 pattern (overflow, underflow, NaN, inf), the
    attention's range, cancellations, denormal accumulators, and hand-made ties, flush-after-rounding, inf x 0,
    inf - inf and NaN-priority cases. The NaN lanes of the real instruction are held to being NaN only: Intel
    documents their priorities, and they are not part of the mode's accuracy contract."""
    acc, a, b = _dot_inputs(np.random.default_rng(0))
    got, want = run_dot(mode, acc, a, b), model_dot(acc, a, b)
    if mode == "avx512-bf16":
        nan_want = (want & 0x7F800000 == 0x7F800000) & (want & 0x7FFFFF != 0)
        nan_got = (got & 0x7F800000 == 0x7F800000) & (got & 0x7FFFFF != 0)
        assert np.array_equal(nan_got, nan_want)
        got, want = got[~nan_want], want[~nan_want]
    assert np.array_equal(got, want), _mismatches(got, want)


@pytest.mark.skipif(not native_ops.available(), reason="no C++ compiler for the native ops")
def test_the_emulation_is_not_picked_on_its_own(monkeypatch):
    """avx512-bf16-emulated runs only when asked: the op's bf16 = 1 ("the best here") and debx's rewrite never pick
    it, so a CPU without AVX-512 BF16 or AMX keeps the float32 attention."""
    if runs_here("amx-bf16") or runs_here("avx512-bf16"):
        pytest.skip("this CPU has a real bf16 family")
    monkeypatch.delenv(int8_cpu.ATTENTION_ENV, raising=False)
    assert not native_ops.attention_bf16_available(1)
    for family in int8_cpu.FAMILIES:
        assert int8_cpu.attention_mode(family) == "float32"


# ---------------------------------------------------------------------------------------------------------------------
# The op in each mode
# ---------------------------------------------------------------------------------------------------------------------

from test_native_ops import CASES, _data, _graph, _session  # noqa: E402 (tests/runtimes is on sys.path)

from debx.runtimes.reference_ops import debx_attention_reference  # noqa: E402


@pytest.fixture(scope="module")
def library() -> str:
    return str(native_ops.library_path())


def _attrs(H, D, span, buckets, max_rel, c2p, p2c) -> dict:
    return dict(num_heads=H, scale=float(1 / np.sqrt(3 * D)), span=span, position_buckets=buckets,
                max_relative_positions=max_rel, c2p=c2p, p2c=p2c)


@pytest.mark.parametrize("mode", [mode_param(m) for m in MODES if m != "float32"])
@pytest.mark.parametrize("B, N, H, D, span, buckets, max_rel, c2p, p2c", CASES)
def test_bf16_mode_stays_near_the_reference(library, mode, B, N, H, D, span, buckets, max_rel, c2p, p2c):
    """The op's contract in every bf16 mode (constant tables: bfloat16 operands, float32 accumulation and softmax):
    within 2% of the output scale of the float64-accurate reference, on padded and fully padded rows, log buckets with
    N > span, linear positions, c2p only, p2c only, head sizes and lengths that are not multiples of 16 or 32, one
    token; and not the float32 result (the mode ran). Tables fed as inputs keep the float32 path."""
    HD, P = H * D, 2 * span
    attrs = _attrs(H, D, span, buckets, max_rel, c2p, p2c)
    q, k, v, pk, pq, mask = _data(B, N, HD, P)
    want = debx_attention_reference(q, k, v, pk, pq, mask, **attrs)
    got = _session(_graph(dict(attrs, bf16=MODES[mode]), HD, P, (pk, pq)), library).run(
        None, dict(q=q, k=k, v=v, mask=mask))[0]
    err = np.abs(got - want).max()
    assert err <= 2e-2 * max(1.0, np.abs(want).max()), err
    if N > 1:
        assert err > 1e-6  # the bf16 path ran
    fed = _session(_graph(dict(attrs, bf16=MODES[mode]), HD, P), library).run(
        None, dict(q=q, k=k, v=v, pk=pk, pq=pq, mask=mask))[0]
    np.testing.assert_allclose(fed, want, atol=2e-6, rtol=0)


@pytest.mark.skipif(not (runs_here("avx512-bf16") and runs_here("avx512-bf16-emulated")),
                    reason=WHY_NOT["avx512-bf16"])
@pytest.mark.parametrize("B, N, H, D, span, buckets, max_rel, c2p, p2c", CASES[:4])
def test_the_emulated_mode_is_the_real_one(library, B, N, H, D, span, buckets, max_rel, c2p, p2c):
    """Where the CPU has AVX-512 BF16: the emulated mode's output is the real mode's, bit for bit."""
    HD, P = H * D, 2 * span
    attrs = _attrs(H, D, span, buckets, max_rel, c2p, p2c)
    q, k, v, pk, pq, mask = _data(B, N, HD, P)
    outs = [_session(_graph(dict(attrs, bf16=MODES[m]), HD, P, (pk, pq)), library).run(
        None, dict(q=q, k=k, v=v, mask=mask))[0] for m in ("avx512-bf16", "avx512-bf16-emulated")]
    assert np.array_equal(outs[0], outs[1])


def test_a_mode_this_cpu_cannot_run_is_refused_at_load(library):
    attrs = _attrs(2, 16, 16, 32, 64, 1, 1)
    q, k, v, pk, pq, mask = _data(1, 8, 32, 32)
    with pytest.raises(Exception, match="unknown bf16 mode 9"):
        _session(_graph(dict(attrs, bf16=9), 32, 32, (pk, pq)), library)
    missing = [m for m in ("amx-bf16", "avx512-bf16") if not runs_here(m)]
    if not missing:
        pytest.skip("this CPU runs every bf16 mode")
    with pytest.raises(Exception, match=f"cannot run the bf16 mode {missing[0]}"):
        _session(_graph(dict(attrs, bf16=MODES[missing[0]]), 32, 32, (pk, pq)), library)


@pytest.mark.skipif(not runs_here("avx512-bf16-emulated"), reason=WHY_NOT["avx512-bf16-emulated"])
def test_baseline_isa_runs_no_bf16_mode(library):
    """DEBX_CPU_ISA=baseline (the library as on a CPU without AVX-512): every bf16 mode is off; asking for one is
    refused at load, bf16 = 1 runs float32."""
    code = ("import ctypes, sys; lib = ctypes.CDLL(sys.argv[1]); "
            "print([lib.debx_ort_ops_attention_bf16_available(f) for f in range(5)])")
    proc = subprocess.run([sys.executable, "-c", code, library], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DEBX_CPU_ISA": "baseline"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[1, 0, 0, 0, 0]"


# ---------------------------------------------------------------------------------------------------------------------
# Which mode debx's INT8 rewrite picks
# ---------------------------------------------------------------------------------------------------------------------

@pytest.fixture
def cpu_has(monkeypatch):
    """Pretend this CPU runs exactly the attention modes given (float32 always)."""
    def set_(*modes):
        monkeypatch.setattr(int8_cpu, "attention_mode_available", lambda name: name == "float32" or name in modes)
    monkeypatch.delenv(int8_cpu.ATTENTION_ENV, raising=False)
    monkeypatch.delenv("DEBX_AMX", raising=False)
    return set_


def test_the_mode_follows_the_matmul_family(cpu_has, monkeypatch):
    cpu_has("amx-bf16", "avx512-bf16", "avx512-bf16-emulated")  # a Sapphire Rapids
    assert [int8_cpu.attention_mode(f) for f in ("amx", "avx512-vnni", "ort")] == ["amx-bf16", "avx512-bf16",
                                                                                  "float32"]
    monkeypatch.setenv("DEBX_AMX", "0")
    assert int8_cpu.attention_mode("amx") == "avx512-bf16"
    cpu_has("avx512-bf16", "avx512-bf16-emulated")  # an AMD Zen 4 / 5
    assert [int8_cpu.attention_mode(f) for f in ("amx", "avx512-vnni", "ort")] == ["avx512-bf16"] * 2 + ["float32"]
    cpu_has("avx512-bf16-emulated")  # an Ice Lake: the emulation is never picked on its own
    assert {int8_cpu.attention_mode(f) for f in int8_cpu.FAMILIES} == {"float32"}


def test_the_mode_can_be_forced(cpu_has, monkeypatch):
    from debx.errors import ConfigError

    cpu_has("avx512-bf16-emulated")
    monkeypatch.setenv(int8_cpu.ATTENTION_ENV, "avx512-bf16-emulated")
    assert int8_cpu.attention_mode("ort") == "avx512-bf16-emulated"
    monkeypatch.setenv(int8_cpu.ATTENTION_ENV, "float32")
    assert int8_cpu.attention_mode("amx") == "float32"
    monkeypatch.setenv(int8_cpu.ATTENTION_ENV, "avx512-bf16")
    with pytest.raises(ConfigError, match="DEBX_CPU_ATTENTION=avx512-bf16: cannot run here, .*AVX512_BF16"):
        int8_cpu.attention_mode()
    monkeypatch.setenv(int8_cpu.ATTENTION_ENV, "bf16")
    with pytest.raises(ConfigError, match="unknown attention mode .*float32, amx-bf16, avx512-bf16, "
                                          "avx512-bf16-emulated"):
        int8_cpu.attention_mode()


@pytest.mark.skipif(not runs_here("avx512-bf16-emulated"), reason=WHY_NOT["avx512-bf16-emulated"])
def test_the_runner_runs_and_reports_the_forced_mode(tmp_path, monkeypatch):
    """An INT8 graph with debx's attention, opened by debx's runner: DEBX_CPU_ATTENTION picks the attention's mode,
    the report line names it, and the output stays within the mode's contract of the float32 attention's."""
    from onnx import TensorProto, helper, numpy_helper

    from debx.runtimes.onnxruntime import open_session
    from debx.runtimes.reference_ops import DEBX_DOMAIN, DEBX_OP
    from test_int8_cpu import ffn_model

    model = ffn_model(K=192)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend(numpy_helper.from_array(rng.standard_normal((16, 192)).astype(np.float32), n)
                                   for n in ("pk", "pq"))
    model.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "seq"]))
    model.graph.node.append(helper.make_node(DEBX_OP, ["out", "side_k", "out", "pk", "pq", "mask"], ["att"],
                                             domain=DEBX_DOMAIN, **_attrs(2, 96, 8, 0, 8, 1, 1)))
    model.graph.node.insert(len(model.graph.node) - 1, helper.make_node("Tanh", ["out"], ["side_k"]))
    model.graph.output.append(helper.make_tensor_value_info("att", TensorProto.FLOAT, ["batch", "seq", 192]))
    model.opset_import.append(helper.make_opsetid(DEBX_DOMAIN, 1))
    path = tmp_path / "int8_attention.onnx"
    path.write_bytes(model.SerializeToString())
    feeds = {"x": rng.standard_normal((2, 45, 192)).astype(np.float32), "mask": np.ones((2, 45), np.int32)}
    feeds["mask"][1, 30:] = 0
    runs = {}
    for mode in ("float32", "avx512-bf16-emulated"):
        monkeypatch.setenv(int8_cpu.ATTENTION_ENV, mode)
        info: dict = {}
        runs[mode] = open_session(path, threads=1, info=info).run(["att"], feeds)[0]
        assert info["attention_kernels"] == mode
        assert info["int8_cpu"].get(int8_cpu.BF16_ATTENTION, 0) == (mode != "float32")
        described = {"int8_kernels": info["int8_kernels"], "attention_kernels": info["attention_kernels"]}
        assert f"; attention {mode}" in int8_cpu.kernel_summary(described)
    err = np.abs(runs["avx512-bf16-emulated"] - runs["float32"]).max()
    assert 1e-6 < err <= 2e-2 * max(1.0, np.abs(runs["float32"]).max()), err
