"""`debx export`: a checkpoint folder -> a validated ONNX file and its JSON sidecar."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from debx import verbosity

EXAMPLES = (
    ("debx export runs/sst2 -o runs/sst2.onnx", "FP32, standard ops, validated against PyTorch"),
    ("debx export runs/sst2 -o runs/sst2.debx.onnx --attention debx", "the fastest on ONNX Runtime CPU"),
    ("debx export runs/sst2 -o runs/sst2-onnx/ --optimum-axes", "a folder Optimum's from_pretrained loads"),
    ("debx export runs/sst2 -o runs/sst2.fp16.onnx --fp16 --opset 18", "FP16 weights and compute"),
)


def default_output(checkpoint: Path, attention: str, fp16: bool) -> Path:
    """<checkpoint name>[.<attention>].<precision>.onnx in the current folder."""
    mode = "" if attention == "onnx" else f".{attention}"
    return Path(f"{checkpoint.resolve().name}{mode}.{'fp16' if fp16 else 'fp32'}.onnx")


def command(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder (Hugging Face format: config.json + weights)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="The .onnx file to write, or a folder (DIR/, "
                                         "or an existing folder): DIR/model.onnx with the checkpoint's config.json "
                                         "and tokenizer files beside it, as Optimum's ORTModel*.from_pretrained(DIR) "
                                         "and pipeline() load it. Default: "
                                         "<checkpoint>[.<attention>].<fp32|fp16>.onnx here."),
    attention: str = typer.Option("onnx", "--attention", help="onnx: standard ops only; fast: standard ops, "
                                  "the CPU-fast emission (position span sliced to the length, no broadcast copies); trt: "
                                  "TensorRT's DisentangledAttention_TRT plugin (log-bucket v2/v3); debx: one fused debx op per layer (our "
                                  "TensorRT plugin; on ONNX Runtime CPU our native kernel, the fastest CPU choice)."),
    fp16: bool = typer.Option(False, "--fp16", help="FP16 weights and compute, FP32 inputs/outputs."),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset (17..20). Default 17."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Longest sequence validated (default: "
                                              "max_position_embeddings). The graph takes any length, except a model "
                                              "with absolute position embeddings: at most max_position_embeddings."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Pin the batch size (default: dynamic 'batch' axis)."),
    seq: Optional[int] = typer.Option(None, "--seq", help="Pin the sequence length (default: dynamic 'sequence' axis)."),
    head: Optional[str] = typer.Option(None, "--head", help="classification, regression, embeddings or masked-lm "
                                       "(default: the checkpoint's own)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="GLUE folder for the validation sentences. "
                                            "Default: $GLUE_DIR, then ../shared/glue, else built-in sentences."),
    gi_max_scope: Optional[str] = typer.Option(None, "--gi-max-scope", help="giMLP models: threshold the gates with "
                                               "the maximum over the whole batch (batch, as the reference code) or "
                                               "per example (example: outputs independent of batching). Default: "
                                               "the checkpoint's gi_max_scope (batch)."),
    optimum_axes: bool = typer.Option(False, "--optimum-axes", help="Name the dynamic axes as Optimum does "
                                      "(batch_size, sequence_length) instead of batch, sequence."),
) -> None:
    """Export a checkpoint to ONNX and validate it against PyTorch (exit 1 and no file when validation fails)."""
    from rich.console import Console

    from debx.exporters.export import ExportConfig, export_onnx
    from debx.exporters.validate import print_report

    out = output or default_output(checkpoint, attention, fp16)
    cfg = ExportConfig(checkpoint=checkpoint, output=out, attention=attention, fp16=fp16, opset=opset,
                       max_seq_len=max_seq_len, batch=batch, seq=seq, head=head, data_dir=data_dir,
                       gi_max_scope=gi_max_scope, optimum_axes=optimum_axes)
    con = Console()
    with verbosity.status(con, f"exporting {checkpoint} ({attention} attention, {cfg.precision})"):
        res = export_onnx(cfg)
    meta, rep = res.metadata, res.report
    table = con if verbosity.info() else Console(quiet=True)  # -q: the summary line, not the per-case table
    summary = print_report(table, f"{res.output.name} · {meta['variant']} · {meta['head']} · opset {meta['opset']}",
                           rep)
    con.print(f"[green]validated[/green] {meta['precision']} vs PyTorch: {summary}", soft_wrap=True)
    if verbosity.detail():
        shapes = meta["shapes"]
        axes = shapes.get("axis_names") or ["batch", "sequence"]
        con.print(f"graph: opset {meta['opset']}, inputs {', '.join(meta['inputs'])} -> {', '.join(meta['outputs'])}; "
                  f"batch {shapes['batch']} ({axes[0]}), sequence {shapes['sequence']} ({axes[1]}), validated up to "
                  f"{shapes['max_seq_len']} tokens", highlight=False, soft_wrap=True)
        if meta.get("custom_ops"):
            ops = meta["custom_ops"]
            con.print(f"custom ops: {ops['domain']}::{', '.join(ops['ops'])} need {ops['onnxruntime_library']} "
                      "outside debx (debx ops-path prints its path)", highlight=False, soft_wrap=True)
        con.print(f"source: {meta['source']['checkpoint']} (fingerprint {meta['source']['fingerprint']}); "
                  f"versions: {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
                  highlight=False, soft_wrap=True)
    for w in res.warnings:
        con.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    extra = [f.name for f in res.folder_files] + ([res.external_data.name] if res.external_data else [])
    con.print(f"wrote {res.output} and {res.sidecar.name}" + (f" (+ {', '.join(extra)})" if extra else ""),
              highlight=False, soft_wrap=True)
