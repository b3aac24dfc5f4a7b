"""The Triton twin of the fused kernel under TRITON_INTERPRET=1 (CPU) against the PyTorch references.

Optional: needs `triton` (pip install 'debx[gpu]'); skipped when it is not installed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported: run the kernel on the CPU

import pytest  # noqa: E402

pytest.importorskip("triton")

from test_attention_host import CASES, FP32_TOL, make_case, model_reference, spec_attention  # noqa: E402
from triton_twin import triton_attention  # noqa: E402


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="needs TRITON_INTERPRET=1 (no GPU here)")
@pytest.mark.parametrize("seq", [1, 7, 33, 65])
@pytest.mark.parametrize("case", ["v1-c2p+p2c", "v3small-c2p+p2c", "v3-c2p-only"])
def test_triton_twin_matches_pytorch(case, seq):
    tensors, attrs = make_case(batch=2, seq=seq, pad=(0, seq // 2), seed=seq + 7, **CASES[case])
    got = triton_attention(*tensors, **attrs)
    want = spec_attention(*tensors, **attrs)
    assert (got - want).abs().max().item() <= FP32_TOL
    ref = model_reference()
    if ref is not None:
        assert (got - ref(*tensors, **attrs)).abs().max().item() <= FP32_TOL
