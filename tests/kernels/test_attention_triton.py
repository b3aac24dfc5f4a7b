"""The fused CUDA attention kernel (debx.kernels.attention_triton) proven on the CPU, under TRITON_INTERPRET=1.

The same Triton program that runs on the GPU walks its query/key tiles here: masked partial tiles (N not a multiple of
the tile), padded and fully padded rows, the band products' gather, c2p-only / p2c-only, v1 linear positions and
v3 log buckets, against the float64 PyTorch reference. It is also compiled to sm_80 (mma.sync) and sm_90 (wgmma)
machine code with no GPU present. Measured on an H100: scripts/gpu_attention.py (README, "On NVIDIA GPUs").
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: run the kernel on the CPU

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")

from debx.kernels import attention_triton, torch_op  # noqa: E402,F401 (torch_op registers the op)
from debx.model import disentangled_attention, relative_index_table  # noqa: E402

interpreted = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available(),
                                 reason="needs TRITON_INTERPRET=1 (set before triton was imported) or a GPU")

CASES = {  # name: (span, buckets, max_relative, c2p, p2c)
    "v1-linear": (24, 0, 24, True, True),
    "v3-buckets": (16, 16, 64, True, True),
    "c2p-only": (16, 16, 64, True, False),
    "p2c-only": (16, 16, 64, False, True),
    "no-relative": (16, 16, 64, False, False),
}


def _case(name, B, N, H=2, D=16, seed=0):
    span, buckets, max_rel, c2p, p2c = CASES[name]
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, N, H * D, generator=g) for _ in range(3))
    pk, pq = (torch.randn(2 * span, H * D, generator=g) for _ in range(2))
    mask = torch.ones(B, N, dtype=torch.long)
    if B > 1:
        mask[0, N - N // 3:] = 0  # padded tail
        mask[-1] = 0  # fully padded row
    attrs = dict(num_heads=H, scale=1.0 / math.sqrt(D * 3), span=span, position_buckets=buckets,
                 max_relative_positions=max_rel, c2p=c2p, p2c=p2c)
    return (q, k, v, pk, pq, mask), attrs


@interpreted
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seq", [1, 7, 33, 70])
def test_kernel_matches_float64_reference(name, seq):
    (q, k, v, pk, pq, mask), attrs = _case(name, 2, seq, seed=seq)
    ref = disentangled_attention(q.double(), k.double(), v.double(), pk.double(), pq.double(), mask, **attrs)
    got = attention_triton.attention(q, k, v, pk, pq, mask, **attrs, block_q=16, block_k=16)
    assert torch.isfinite(got).all()
    assert (got.double() - ref).abs().max().item() <= 1e-5


@interpreted
def test_long_sequence_band_crosses_bucket_region():
    """N well past the bucket span: tiles far from the diagonal read few, clamped/log-bucketed rows."""
    (q, k, v, pk, pq, mask), attrs = _case("v3-buckets", 1, 150, H=1, seed=3)
    ref = disentangled_attention(q.double(), k.double(), v.double(), pk.double(), pq.double(), mask, **attrs)
    got = attention_triton.attention(q, k, v, pk, pq, mask, **attrs, block_q=32, block_k=32)
    assert (got.double() - ref).abs().max().item() <= 1e-5


@interpreted
def test_given_table_is_used_and_checked():
    (q, k, v, pk, pq, mask), attrs = _case("v3-buckets", 1, 20, seed=5)
    table = attention_triton.relative_table(20, 16, 16, 64, q.device)
    want = attention_triton.attention(q, k, v, pk, pq, mask, **attrs)
    got = attention_triton.attention(q, k, v, pk, pq, mask, **attrs, table=table)
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="2L - 1"):
        attention_triton.attention(q, k, v, pk, pq, mask, **attrs, table=table[:-1])
    with pytest.raises(ValueError, match="pos_key must be"):
        attention_triton.attention(q, k, v, pk[:-1], pq, mask, **attrs)


@interpreted
@pytest.mark.parametrize("name", ["v1-linear", "v3-buckets"])
def test_saturated_model_table_gives_any_length(name):
    """The model hands the kernel its short saturated table (relative_index_reach entries a side); distances past it
    are clamped in the kernel, exactly as relative_index does, so N far beyond the table still matches."""
    from debx.model import relative_index_reach

    (q, k, v, pk, pq, mask), attrs = _case(name, 2, 150, H=1, seed=11)
    reach = relative_index_reach(attrs["span"], attrs["position_buckets"], attrs["max_relative_positions"])
    assert 2 * reach - 1 < 2 * 150 - 1  # the table is shorter than the sequence needs unclamped
    table = relative_index_table(reach, attrs["span"], attrs["position_buckets"], attrs["max_relative_positions"])
    ref = disentangled_attention(q.double(), k.double(), v.double(), pk.double(), pq.double(), mask, **attrs)
    got = attention_triton.attention(q, k, v, pk, pq, mask, **attrs, block_q=32, block_k=32, table=table)
    assert (got.double() - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("n", [1, 2, 129, 700])
def test_band_rows_are_the_rows_the_index_reads(n):
    T = relative_index_table(n, 256, 256, 512)
    lo, hi = attention_triton.table_rows(n, 256, 256, 512)
    assert (lo, hi) == (int(T.min()), int(T.max()))
    assert hi - lo + 1 <= min(512, 2 * n - 1)


def test_every_attention_layer_carries_the_encoder_table():
    from debx.model import DebertaConfig, DebertaModel

    m = DebertaModel(DebertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32, position_buckets=16, max_relative_positions=64))
    for layer in m.encoder.layer:
        assert torch.equal(layer.attention.self.rel_index_table, m.encoder.rel_index_table)
    assert not any("rel_index_table" in k for k in m.state_dict())  # never saved with the weights


def test_op_is_registered_with_a_fake_implementation():
    """torch.compile sees one opaque node: the op exists and its fake (meta) kernel gives the output shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    op = torch.ops.debx.disentangled_attention
    with FakeTensorMode() as mode:
        q = mode.from_tensor(torch.empty(2, 9, 32))
        pk = mode.from_tensor(torch.empty(32, 32))
        mask = mode.from_tensor(torch.ones(2, 9, dtype=torch.long))
        table = mode.from_tensor(torch.zeros(17, dtype=torch.long))
        out = op(q, q, q, pk, pk, mask, table, 2, 0.1, 16, 16, 64, True, True)
    assert tuple(out.shape) == (2, 9, 32)


_COMPILE = """
import sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from debx.kernels import attention_triton

cap = int(sys.argv[1])
sig = {name: "*fp16" for name in ("Q", "K", "V", "C2P", "P2C", "OUT")}
sig.update(MASK="*i64", TABLE="*i64", N="i32", H="i32", R="i32", lo="i32", half="i32", qk_scale="fp32")
for name in ("stride_qb", "stride_qn", "stride_kb", "stride_kn", "stride_vb", "stride_vn", "stride_ob", "stride_on",
             "stride_mb", "stride_g"):
    sig[name] = "i32"
const = dict(D=64, BLOCK_D=64, BLOCK_Q=64, BLOCK_K=32, USE_C2P=True, USE_P2C=True, IEEE=False)
sig.update({c: "constexpr" for c in const})
src = ASTSource(fn=attention_triton._debx_attention_fwd, signature=sig, constexprs=const)
kernel = triton.compile(src, target=GPUTarget("cuda", cap, 32), options=dict(num_warps=4, num_stages=2))
ptx = kernel.asm["ptx"]
print(len(kernel.asm["cubin"]), ptx.count("mma.sync"), ptx.count("wgmma.mma_async"))
"""


@pytest.mark.parametrize("capability", [80, 90])
def test_compiles_to_tensor_core_machine_code(capability):
    """sm_80 uses mma.sync, sm_90 wgmma (the Hopper tensor-core instruction): built here, without a GPU, in a process
    where the interpreter is off."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run([sys.executable, "-c", _COMPILE, str(capability)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cubin_bytes, mma_sync, wgmma = map(int, proc.stdout.split()[-3:])
    assert cubin_bytes > 0
    assert (wgmma if capability >= 90 else mma_sync) > 0
