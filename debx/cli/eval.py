"""`debx eval`: score a checkpoint, ONNX model or TensorRT plan on a task split and write a JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def command(
    task: str = typer.Option(..., "--task", "-t", help="GLUE task name or a task spec file."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint folder (PyTorch runner)."),
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="model.onnx (ONNX Runtime) or model.plan (TensorRT)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="GLUE-layout data folder. Default: $GLUE_DIR, then ../shared/glue."),
    split: str = typer.Option("dev", "--split", help="Split to score."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer folder if the artifact's sidecar names none."),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per batch (sorted by length)."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Longest sequence; default the model limit."),
    overflow: str = typer.Option("truncate", "--overflow", help="Longer sequences: truncate (counted in the report) or refuse."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    provider: Optional[str] = typer.Option(None, "--provider", help="ONNX Runtime execution provider: cpu, cuda, tensorrt."),
    plugins: List[Path] = typer.Option([], "--plugins", help="TensorRT plugin library (libdebx_plugins.so)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N rows."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report here."),
) -> None:
    """Score a model on a GLUE/user task split: metrics table on screen, JSON report on request."""
    from rich.console import Console
    from rich.table import Table

    from debx.errors import ConfigError
    from debx.evaluate import EvalConfig, evaluate, write_report

    if (model is None) == (engine is None):
        raise ConfigError("give exactly one of --model CKPT_DIR or --engine FILE")
    cfg = EvalConfig(task=task, engine=model or engine, data_dir=data_dir, split=split, tokenizer=tokenizer,
                     batch_size=batch_size, max_seq_len=max_seq_len, overflow=overflow, threads=threads,
                     provider=provider, plugins=list(plugins), limit=limit)
    res = evaluate(cfg)
    con = Console()
    r = res.report
    t = Table(title=f"{r['task']} {r['split']} · {r['n_examples']} examples · {r['runner'].get('runner')}")
    for k in res.metrics:
        t.add_column(k, justify="right")
    t.add_row(*(f"{v:.2f}" for v in res.metrics.values()))
    con.print(t)
    if r["excluded_calibration_rows"]:
        con.print(f"excluded {r['excluded_calibration_rows']} rows used for calibration")
    if r["truncated"]:
        con.print(f"warning: {r['truncated']} examples truncated to the length limit")
    if report is not None:
        write_report(r, report)
        con.print(f"report: {report}")
