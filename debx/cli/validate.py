"""`debx validate`: prove an ONNX file equal to its PyTorch checkpoint (the check `debx export` runs itself)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from debx import verbosity
from debx.errors import ConfigError

EXAMPLES = (
    ("debx validate runs/sst2.onnx", "against the checkpoint its sidecar names"),
    ("debx validate model.onnx --model runs/sst2 --fp16", "another checkpoint, FP16 tolerances"),
)


def command(
    onnx_file: Path = typer.Argument(..., help="The .onnx file to check."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Source checkpoint folder. Default: the one "
                                         "named in the file's sidecar (<file>.json)."),
    head: Optional[str] = typer.Option(None, "--head", help="Head the file was exported with (default: sidecar)."),
    fp16: Optional[bool] = typer.Option(None, "--fp16/--fp32", help="Tolerances to apply (default: sidecar, "
                                        "then the file's weight type)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="GLUE folder for the validation sentences."),
    threads: Optional[int] = typer.Option(None, "--threads", help="ONNX Runtime CPU threads."),
) -> None:
    """Validate an ONNX file against PyTorch: names, dynamic axes, graph rules, shapes and values on real sentences
    (exit 1 listing every failure)."""
    from rich.console import Console

    from debx.artifacts import artifact_source
    from debx.exporters.validate import print_report, validate_onnx

    if model is None:
        model = artifact_source(onnx_file).checkpoint
        if model is None:
            raise ConfigError(f"{onnx_file}: no sidecar names the source checkpoint; pass --model CKPT_DIR")
    precision = None if fp16 is None else ("fp16" if fp16 else "fp32")

    con = Console()
    with verbosity.status(con, f"validating {onnx_file} against {model}"):
        rep = validate_onnx(onnx_file, model, head=head, precision=precision, data_dir=data_dir, threads=threads)
    table = con if verbosity.info() else Console(quiet=True)  # -q: the verdict line, not the per-case table
    summary = print_report(table, f"{onnx_file.name} vs {model} ({rep.precision}, {rep.attention} attention)", rep)
    con.print(f"[green]PASS[/green]: {summary}")
    if rep.stale:
        con.print(f"note: {rep.stale} (it still matches within tolerance)")
