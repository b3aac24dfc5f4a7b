"""`debx calibrate`: INT8 (explicit Q/DQ) or FP16 ONNX from an FP32 export and task data."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from debx import verbosity

EXAMPLES = (
    ("debx calibrate runs/sst2.onnx --task sst2 -o runs/sst2.int8.onnx", "INT8 for TensorRT and ONNX Runtime"),
    ("debx calibrate runs/sst2.debx.onnx --task sst2 -o runs/sst2.int8.onnx --target ort",
     "INT8 for ONNX Runtime CPU (the fast recipe)"),
    ("debx calibrate runs/sst2.onnx --task sst2 -o runs/sst2.int8.onnx --auto", "fall back until the gate passes"),
    ("debx calibrate runs/sst2.onnx --task sst2 -o runs/sst2.fp16.onnx --precision fp16", "FP16"),
)


def command(
    model: Path = typer.Argument(..., help="FP32 ONNX model (debx export)."),
    task: str = typer.Option(..., "--task", "-t", help="GLUE task name or a task spec file (calibration data)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output model, e.g. model.int8.onnx (OUT.json, "
                                "OUT.ranges.json and, for int8, OUT.calib.cache are written beside it)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="GLUE-layout data folder. Default: $GLUE_DIR, "
                                            "then ../shared/glue."),
    precision: str = typer.Option("int8", "--precision", help="int8 (explicit Q/DQ) or fp16."),
    method: str = typer.Option("entropy", "--method", help="Activation ranges: entropy, percentile or minmax."),
    percentile: float = typer.Option(99.99, "--percentile", help="--method percentile: percent of |x| kept."),
    num_bins: Optional[int] = typer.Option(None, "--num-bins", help="Histogram bins (entropy 256, percentile 2048)."),
    num_samples: int = typer.Option(256, "--num-samples", help="Calibration rows (a seeded sample)."),
    calib_split: str = typer.Option("train", "--calib-split", help="train, or dev (those rows are then excluded "
                                    "from every evaluation of the output)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the row sample."),
    batch_size: int = typer.Option(8, "--batch-size", help="Calibration batch size (length-sorted, dynamic padding)."),
    max_seq_len: Optional[int] = typer.Option(None, "--max-seq-len", help="Truncate calibration rows to this length."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Tokenizer folder if the input sidecar names none."),
    attention: str = typer.Option("", "--int8-attention", help="Also quantize attention matmuls: comma list of "
                                  "scores, position, context, or all. Default: none (float)."),
    target: str = typer.Option("trt", "--target", help="trt: symmetric int8 activations (TensorRT, and ONNX Runtime); "
                               "ort: uint8 activations and an offline ORT CPU optimisation (~4x faster on ONNX "
                               "Runtime CPU; `debx build` refuses it)."),
    activations: Optional[str] = typer.Option(None, "--activations", help="int8 (symmetric; ONNX Runtime and "
                                              "TensorRT) or uint8 (asymmetric; ONNX Runtime CPU only). Default: "
                                              "the --target's (trt: int8, ort: uint8)."),
    embeddings: Optional[str] = typer.Option(None, "--embeddings", help="Embedding tables (word, absolute "
                                             "position): int8 (one scale per row; a quarter of the size) or float. "
                                             "Default: int8 for --target ort, float for trt."),
    exclude: List[str] = typer.Option([], "--exclude", help="Node name (or substring) kept in float; repeatable."),
    auto: bool = typer.Option(False, "--auto", help="Evaluate on dev and move the most sensitive matmuls back to "
                              "float, one step at a time, until the gate passes."),
    gate: str = typer.Option("paper", "--gate", help="--auto gate: paper, relative or none."),
    tolerance: Optional[float] = typer.Option(None, "--tolerance", help="--auto allowed drop (see debx eval --tolerance)."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="--auto reference model (default: the input)."),
    max_steps: int = typer.Option(20, "--max-steps", help="--auto: most fallback steps."),
    step: int = typer.Option(1, "--step", help="--auto: matmuls moved back to float per step."),
    eval_limit: Optional[int] = typer.Option(None, "--eval-limit", help="--auto: score only the first N dev rows."),
    fp16_margin: float = typer.Option(4.0, "--fp16-margin", help="fp16: keep in FP32 what exceeds 65504 / margin."),
    trt_version: str = typer.Option("10.14.1", "--trt-version", help="TensorRT version written in the cache header."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
) -> None:
    """Make an INT8 (explicit Q/DQ) or FP16 model from an FP32 ONNX export, calibrated on task data; with --auto,
    fall back layer by layer until the accuracy gate passes."""
    from rich.console import Console

    from debx.calib.calibrate import CalibrateConfig, calibrate
    from debx.calib.fp16 import FP16Config
    from debx.calib.qdq import QDQPolicy
    from debx.calib.sensitivity import AutoConfig
    from debx.evaluate import candidate_gate
    from debx.gate import GateConfig

    kinds = tuple(k.strip() for k in attention.split(",") if k.strip())
    policy = QDQPolicy(attention="all" if kinds == ("all",) else kinds, exclude_patterns=tuple(exclude))
    gate_cfg = GateConfig(mode=gate, tolerance=tolerance)
    cfg = CalibrateConfig(
        model=model, output=output, task=task, data_dir=data_dir, precision=precision, method=method,
        percentile=percentile, num_bins=num_bins, num_samples=num_samples, calib_split=calib_split, seed=seed,
        batch_size=batch_size, max_seq_len=max_seq_len, tokenizer=tokenizer, policy=policy,
        fp16=FP16Config(overflow_margin=fp16_margin), auto=auto,
        auto_cfg=AutoConfig(max_steps=max_steps, step=step, eval_limit=eval_limit), reference=reference,
        trt_version=trt_version, threads=threads, target=target, activations=activations,
        embeddings=embeddings,
    )

    con = Console()
    # --auto gates candidates with debx eval: built here and handed down (calibration does not import evaluation)
    res = calibrate(cfg, log=verbosity.progress(con.print), evaluator=candidate_gate(cfg, gate_cfg) if auto else None)
    meta = res.metadata
    cal = meta["calibration"]
    con.print(f"[bold]{meta['precision']}[/] model: {res.output}")
    con.print(f"calibrated on {cal['num_samples']} {cal['split']} rows ({cal['method']}); "
              f"parity vs input on them: max |diff| {meta['parity']['max_abs_diff']:.4g}"
              + (f", argmax agreement {100 * meta['parity']['argmax_agreement']:.1f}%"
                 if "argmax_agreement" in meta["parity"] else ""))
    if cal["split"] == "dev":
        con.print(f"note: the {cal['num_samples']} dev rows used for calibration are excluded from every "
                  "`debx eval` of this model")
    if "fp16" in meta:
        for k in meta["fp16"]["kept"]:
            con.print(f"  kept in FP32: {k['node']} ({k['reason']})")
    con.print(f"sidecar: {res.sidecar}; ranges: {res.ranges}"
              + (f"; TensorRT cache: {res.trt_cache}" if res.trt_cache else ""))
