"""`debx eval`: score a checkpoint, ONNX model or TensorRT plan on a task split and write a JSON report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from debx import verbosity
from debx.errors import ConfigError, GateFailed

EXAMPLES = (
    ("debx eval --task sst2 --model runs/sst2", "the PyTorch checkpoint"),
    ("debx eval --task sst2 --engine runs/sst2.int8.onnx --reference runs/sst2 --gate paper --report r.json",
     "gate an INT8 file against the checkpoint"),
    ("debx eval --task my-task.yaml --engine model.onnx --split dev --limit 500", "a task of your own, 500 rows"),
)


def command(
    task: str = typer.Option(..., "--task", "-t", help="GLUE task name or a task spec file."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint folder (PyTorch runner)."),
    engine: Optional[Path] = typer.Option(None, "--engine", "-e", help="model.onnx (ONNX Runtime) or model.plan (TensorRT)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="GLUE-layout data folder. Default: $GLUE_DIR, then ../shared/glue."),
    split: str = typer.Option("dev", "--split", help="Split to score."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer folder if the artifact's sidecar names none."),
    batch_size: int = typer.Option(32, "--batch-size", help="Examples per batch (sorted by length)."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Longest sequence (default: max_position_embeddings; longer only for models without absolute position embeddings)."),
    overflow: str = typer.Option("truncate", "--overflow", help="Longer sequences: truncate (counted in the report) or refuse."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    provider: Optional[str] = typer.Option(None, "--provider", help="ONNX Runtime execution provider: cpu, cuda, tensorrt."),
    device: Optional[str] = typer.Option(None, "--device", help="--model only: cpu, cuda or auto (default: cuda when "
                                         "PyTorch sees a GPU, else cpu)."),
    plugins: List[Path] = typer.Option([], "--plugins", help="TensorRT plugin library (libdebx_plugins.so)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Score only the first N rows."),
    gi_max_scope: Optional[str] = typer.Option(None, "--gi-max-scope", help="giMLP --model: gate threshold over the "
                                               "whole batch (batch) or per example (example) instead of the "
                                               "checkpoint's own; with --reference CKPT the gate measures the cost."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report here (with --reference also "
                                          "REPORT.md and REPORT.png)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Gate against this reference: a checkpoint "
                                             "folder or model file (evaluated now), or a debx eval report.json."),
    gate: Optional[str] = typer.Option(None, "--gate", help="Gate mode with --reference: paper (default), relative "
                                       "or none."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="Allowed drop: metric points for --gate "
                                              "paper (default: the task's paper range), percent of the reference "
                                              "for relative (default 1)."),
) -> None:
    """Score a model on a GLUE/user task split: metrics table on screen, JSON report on request; with --reference,
    gate it against the reference (exit 1 on FAIL)."""
    from rich.console import Console
    from rich.table import Table

    from debx.evaluate import EvalConfig, evaluate, write_report

    if (model is None) == (engine is None):
        raise ConfigError("give exactly one of --model CKPT_DIR or --engine FILE")
    if reference is None and (gate is not None or tolerance is not None):
        raise ConfigError("--gate/--tolerance need --reference CKPT_DIR|MODEL|report.json")
    gate_cfg = None
    if reference is not None:
        from debx.gate import GateConfig

        gate_cfg = GateConfig(mode=gate or "paper", tolerance=tolerance)
        if not reference.exists():
            raise ConfigError(f"--reference {reference}: no such file or directory")
    if report is not None:
        from debx.artifacts import check_writable, refuse_overwriting_inputs

        check_writable(report, "--report")
        from debx.evaluate import gate_output_paths

        md, png = gate_output_paths(report) if reference is not None else (None, None)
        refuse_overwriting_inputs({"--report": report, "--report (markdown)": md, "--report (plot)": png},
                                  [model, engine, reference, tokenizer, data_dir, *plugins,
                                   task if Path(task).is_file() else None])
    cfg = EvalConfig(task=task, engine=model or engine, data_dir=data_dir, split=split, tokenizer=tokenizer,
                     batch_size=batch_size, max_seq_len=max_seq_len, overflow=overflow, threads=threads,
                     provider=provider, device=device, plugins=list(plugins), limit=limit, gi_max_scope=gi_max_scope,
                     progress=verbosity.info())
    res = evaluate(cfg)
    con = Console()
    r = res.report
    where = r["runner"].get("provider") or r.get("device")
    con.print(f"[bold]{r['task']} {r['split']}[/bold] · {r['n_examples']} examples · {r['runner'].get('runner')}"
              + (f" · {where}" if where else ""))
    t = Table()
    for k in res.metrics:
        t.add_column(k, justify="right")
    t.add_row(*(f"{v:.2f}" for v in res.metrics.values()))
    con.print(t)
    if verbosity.detail():
        con.print("runner: " + ", ".join(f"{k} {v}" for k, v in r["runner"].items() if not isinstance(v, (dict, list))),
                  highlight=False, soft_wrap=True)
    if r["excluded_calibration_rows"]:
        con.print(f"excluded {r['excluded_calibration_rows']} rows used for calibration")
    if r["truncated"]:
        con.print(f"warning: {r['truncated']} examples truncated to the length limit")
    if gate_cfg is None:
        from debx.evaluate import kernel_notes, provenance_notes

        for note in provenance_notes(r) + kernel_notes(r):
            con.print(note, soft_wrap=True)
        if report is not None:
            write_report(r, report)
            con.print(f"report: {report}")
        return
    _gate(cfg, res, reference, gate_cfg, report, con)


def _gate(cfg, res, reference, gate_cfg, report, con) -> None:
    from debx.evaluate import gate_against, gate_notes, write_gate_outputs
    from debx.report import markdown_table

    result, ref = gate_against(cfg, res, reference, gate_cfg)
    print(f"accuracy gate ({result.mode}):")
    print(markdown_table([result]))  # plain text: readable in any terminal width and in CI logs
    for note in gate_notes(res.report, ref):
        print(note)
    if report is not None:
        md, png = write_gate_outputs(report, res.report, result, ref)
        con.print(f"report: {report}, {md}, {png}")
    if not result.passed:
        raise GateFailed(f"gate {result.mode}: {result.task} {result.metric} {result.candidate:.2f} vs reference "
                         f"{result.reference:.2f} (delta {result.delta:+.2f}, allowed drop {result.allowed_drop:.2f})")
