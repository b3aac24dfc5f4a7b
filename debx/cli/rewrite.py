"""`debx rewrite`: write an ONNX file with the runner's graph rewrites applied ahead of time (debx.runtimes.rewrites)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from debx.runtimes.rewrites import rewrite_file

EXAMPLES = (
    ("debx rewrite runs/sst2.int8.onnx -o runs/sst2.int8.cpu.onnx", "the steps this machine's runner would apply"),
    ("debx rewrite model.int8.onnx -o model.ln.onnx --steps layernorm-quantize", "only the named steps"),
    ("DEBX_CPU_KERNELS=avx512-vnni debx rewrite model.int8.onnx -o model.vnni.onnx", "choose the INT8 kernel family"),
)


def command(
    onnx_file: Path = typer.Argument(..., help="The .onnx file to rewrite (it is left as it is)."),
    output: Path = typer.Option(..., "--output", "-o", help="The rewritten .onnx file (its sidecar OUT.json lists "
                                "the steps applied)."),
    steps: Optional[str] = typer.Option(None, "--steps", help="Comma list of steps to apply (default: every step "
                                        "the runner would apply here). Steps: int8-matmul, layernorm-quantize, "
                                        "attention-bf16, attention-casts, reference-ops."),
) -> None:
    """Write a file with the graph rewrites debx's ONNX Runtime runner would make applied ahead of time (INT8
    matmuls and LayerNorm+quantize onto debx's native CPU ops, the attention's bf16 mode, casts or reference ops for
    custom attention nodes): it shows exactly what runs, and the runner opens it as it is (no rewrite, no copy in
    memory). DEBX_CPU_KERNELS, DEBX_CPU_ATTENTION, DEBX_AMX and DEBX_NATIVE_OPS steer it as they steer the runner."""
    from rich.console import Console

    names = None if steps is None else [s.strip() for s in steps.split(",") if s.strip()]
    res = rewrite_file(onnx_file, output, names)
    con = Console(soft_wrap=True)
    for a in res.applied:
        con.print(f"{a.step}: " + ", ".join(f"{k} ×{v}" for k, v in a.counts.items()) + f" · {a.choice}",
                  highlight=False)
    for name, why in res.skipped.items():
        con.print(f"{name}: not applied ({why})", highlight=False)
    con.print(f"wrote {res.output} and {res.sidecar.name}", highlight=False)
