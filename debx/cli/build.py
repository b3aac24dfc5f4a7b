"""`debx build`: a TensorRT engine (.plan + .plan.json) from an exported ONNX model."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from debx import verbosity
from debx.errors import ConfigError

EXAMPLES = (
    ("debx build runs/sst2.onnx -o runs/sst2.plan --fp16", "an FP16 TensorRT plan"),
    ("debx build runs/sst2.int8.onnx -o runs/sst2.int8.plan --int8 --plugins /opt/debx/lib/libdebx_plugins.so",
     "INT8 (Q/DQ) with debx's plugin library"),
)


def command(
    onnx: Path = typer.Argument(..., help="ONNX model written by `debx export` (any --attention mode)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Plan file. Default: the ONNX path with .plan."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 kernels (TensorRT 10 builder flag; TensorRT 11+: the ONNX "
                              "must be an FP16 export)."),
    int8: bool = typer.Option(False, "--int8", help="INT8 from the ONNX's Q/DQ nodes (debx calibrate), FP16 elsewhere."),
    bf16: bool = typer.Option(False, "--bf16", help="BF16 kernels (TensorRT 10 builder flag; TensorRT 11+: BF16 export)."),
    strongly_typed: bool = typer.Option(False, "--strongly-typed", help="Take every precision from the ONNX types "
                                        "(always the case on TensorRT 11+)."),
    plugins: List[Path] = typer.Option([], "--plugins", help="Plugin library to load, e.g. libdebx_plugins.so for "
                                       "--attention debx graphs (repeatable; default $DEBX_PLUGINS)."),
    min_shape: str = typer.Option("1x1", "--min", help="Smallest BATCHxSEQUENCE of the optimization profile."),
    opt_shape: str = typer.Option("8x128", "--opt", help="BATCHxSEQUENCE TensorRT tunes for."),
    max_shape: str = typer.Option("32x512", "--max", help="Largest BATCHxSEQUENCE of the optimization profile."),
    workspace: int = typer.Option(4096, "--workspace", help="Builder workspace limit in MiB."),
) -> None:
    """Build a TensorRT engine from an ONNX export: one optimization profile over dynamic batch and length, TensorRT
    10 precision flags or the TensorRT 11 strongly typed path, debx/NVIDIA attention plugins, and a JSON sidecar
    (versions, flags, profiles). Needs TensorRT and an NVIDIA GPU; says so in one line when they are missing."""
    from debx.engine import BuildConfig, build_engine, parse_shape

    chosen = [name for name, on in (("fp16", fp16), ("int8", int8), ("bf16", bf16)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"choose at most one of --fp16, --int8, --bf16 (got {', '.join('--' + c for c in chosen)})")
    cfg = BuildConfig(onnx=onnx, output=output, precision=chosen[0] if chosen else "fp32",
                      strongly_typed=strongly_typed, plugins=list(plugins),
                      min_shape=parse_shape(min_shape, "--min"), opt_shape=parse_shape(opt_shape, "--opt"),
                      max_shape=parse_shape(max_shape, "--max"), workspace_mib=workspace)

    result = build_engine(cfg, log=verbosity.progress(lambda msg: print(msg, file=sys.stderr)))
    flags = ", ".join(result.selection.builder_flags) or "none"
    typing = "strongly typed" if result.selection.strongly_typed else "weakly typed"
    print(f"built {result.plan} (TensorRT {result.tensorrt_version}, {typing}, builder flags: {flags})")
    for note in result.selection.notes:
        print(f"note: {note}")
    for name, lo, opt, hi in result.profiles:
        print(f"  profile {name}: min {lo[0]}x{lo[1]}  opt {opt[0]}x{opt[1]}  max {hi[0]}x{hi[1]}")
    print(f"sidecar: {result.sidecar}")
