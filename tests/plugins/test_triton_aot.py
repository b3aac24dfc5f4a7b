"""The TensorRT plugin's tensor-core path is the Triton kernel PyTorch runs, compiled ahead of time into the plugin
library (plugins/disentangledAttention/disentangledAttentionTritonAot.py; CMake runs it, ci_compile.sh builds it).

Here: the generator's header describes every image the launcher looks for, the band-products kernel that the plugin
uses in place of cuBLAS equals the PyTorch product (Triton interpreter), and the header compiles as C++."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "plugins" / "disentangledAttention" / "disentangledAttentionTritonAot.py"


@pytest.fixture(scope="module")
def header(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("aot") / "disentangledAttentionTritonImages.h"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    proc = subprocess.run([sys.executable, str(GENERATOR), "--out", str(out)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout
    return out.read_text()


def test_every_kind_dtype_and_arch_has_an_image(header):
    entries = [line.strip() for line in header.splitlines() if line.strip().startswith("{") and "kCubin" in line]
    combos = {tuple(e.strip("{},").split(",")[:3]) for e in entries}
    want = {(str(kind), str(dtype), f" {arch}") for kind in (0, 1) for dtype in (1, 2) for arch in (80, 90)}
    assert {(k.strip(), d.strip(), a) for k, d, a in combos} == {(k, d, a) for k, d, a in want}
    assert "_debx_attention_fwd" in header and "_band_products_fwd" in header


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_header_compiles_as_cpp(header, tmp_path):
    (tmp_path / "disentangledAttentionTritonImages.h").write_text(header)
    src = tmp_path / "use.cpp"
    src.write_text('#include "disentangledAttentionTritonImages.h"\n'
                   "int main() { return debx::attention::triton_images::kImages[0].size > 0 ? 0 : 1; }\n")
    proc = subprocess.run(["g++", "-std=c++17", "-fsyntax-only", f"-I{tmp_path}", str(src)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_band_kernel_equals_the_pytorch_product():
    proc = subprocess.run([sys.executable, "-c", (
        "import torch\n"
        "from debx.kernels.attention_triton import band_products, band_products_triton\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(3, 70, 4 * 16, generator=g); t = torch.randn(40, 64, generator=g)\n"
        "d = (band_products(x, t[5:37], 4) - band_products_triton(x, t, 4, lo=5, rows=32)).abs().max().item()\n"
        "print(d)\n")], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TRITON_INTERPRET": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.split()[-1]) <= 1e-5
