"""`debx bench`: latency/throughput of checkpoints, ONNX files and baselines side by side (logic in debx/bench.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from debx import verbosity
from debx.errors import ConfigError

EXAMPLES = (
    ("debx bench --model runs/sst2 --engine runs/sst2.onnx --engine runs/sst2.int8.onnx --batch 1,8 --seq 128",
     "side by side, interleaved"),
    ("debx bench --engine runs/sst2.int8.onnx --compare pytorch,hf,optimum --json bench.json", "against baselines"),
    ("debx bench --op attention --device cuda --batch 1,4 --seq 2048", "the attention op alone, on a GPU"),
)


def command(
    model: List[Path] = typer.Option([], "--model", "-m", help="Checkpoint folder: the debx PyTorch model (repeatable)."),
    engine: List[Path] = typer.Option([], "--engine", "-e", help=".onnx file (ONNX Runtime) or TensorRT plan (repeatable)."),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch sizes, comma-separated, e.g. 1,8,32."),
    seq: str = typer.Option("128", "--seq", "-s", help="Sequence lengths, comma-separated, e.g. 32,128,512."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads for every engine."),
    compare: str = typer.Option("", "--compare", help="Baselines: pytorch, hf, optimum (FP32 + dynamic INT8)."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed calls per engine and shape."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Timed calls per engine and shape (default 20)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Time budget per shape instead of --iters."),
    block: int = typer.Option(3, "--block", help="Timed calls per turn; each turn starts with one untimed settling "
                              "call so the previous engine's spinning threads do not slow this one."),
    ratio_to: Optional[str] = typer.Option(None, "--ratio-to", help="Entry for the ratio column (default: the first)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full report as JSON."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG bar chart."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random input ids."),
    device: Optional[str] = typer.Option(None, "--device", help="PyTorch entries (--model, --compare pytorch,hf): "
                                         "cpu, cuda or auto (default: cuda when PyTorch sees a GPU, else cpu)."),
    provider: Optional[str] = typer.Option(None, "--provider", help="ONNX Runtime entries (.onnx, --compare optimum): "
                                           "cpu (default), cuda or tensorrt (need onnxruntime-gpu)."),
    op: Optional[str] = typer.Option(None, "--op", help="Time one op instead of models: 'attention' = the fused CUDA "
                                     "attention vs PyTorch eager, SDPA with a materialized bias, flash SDPA without "
                                     "the relative terms, and (layer level) DisentangledFlash / FlashDeBERTa when "
                                     "installed. Needs a GPU; v3-base shapes (12 heads of 64)."),
    dtype: str = typer.Option("fp16", "--dtype", help="With --op: fp16, bf16 or fp32."),
    peak_rss: bool = typer.Option(True, "--peak-rss/--no-peak-rss", help="After the timing, load and run each entry "
                                  "again alone in a child process and report its peak RSS, beside its size on disk."),
) -> None:
    """Time engines side by side (same process, same inputs, round-robin): p50/p90/p99, throughput, memory.

    Examples:  debx bench -m runs/sst2 -e runs/sst2.onnx -e runs/sst2.int8.onnx --compare optimum --batch 1,8
               debx bench --op attention --device cuda --batch 1,4 --seq 128,2048
    """
    from rich.console import Console
    from rich.table import Table

    if op is not None:
        _op_bench(op, dtype, batch, seq, device, compare, warmup, iters, seed, json_out, model, engine)
        return

    from debx.artifacts import refuse_overwriting_inputs
    from debx.bench import (MEMORY_COLUMNS, TABLE_COLUMNS, BenchConfig, device_note, kernel_notes, memory_rows,
                            parse_int_list, run_bench, table_rows)

    refuse_overwriting_inputs({"--json": json_out, "--plot": plot}, [*model, *engine])
    cfg = BenchConfig(models=list(model), engines=list(engine), batches=parse_int_list(batch, "--batch"),
                      seqs=parse_int_list(seq, "--seq"), threads=threads,
                      compare=tuple(c.strip() for c in compare.split(",") if c.strip()), warmup=warmup,
                      iters=iters, seconds=seconds, block=block, ratio_to=ratio_to, seed=seed, json_path=json_out, plot_path=plot,
                      device=device, provider=provider, peak_rss=peak_rss)

    con = Console(stderr=True)
    res = run_bench(cfg, progress=verbosity.progress(lambda msg: con.print(f"[dim]{msg}[/dim]")))
    r = res.report
    m = r["machine"]
    t = Table(title=f"debx bench · {m['cpu']} · threads {m['threads'] or 'default'} · ratio to {r['reference']}")
    for i, c in enumerate(TABLE_COLUMNS):
        t.add_column(c, justify="left" if i < 3 else "right")
    for row in table_rows(r):
        t.add_row(*row)
    out = Console() if Console().is_terminal else Console(width=170)  # files/pipes: do not squeeze the table
    out.print(t)
    shapes = ", ".join(f"{b}×{s}" for b in cfg.batches for s in cfg.seqs)
    mem = Table(title=f"memory · each entry alone in a child process: load, then {cfg.warmup} + 3 calls at {shapes} · "
                      "MiB" if cfg.peak_rss else "size on disk · MiB")
    for i, c in enumerate(MEMORY_COLUMNS if cfg.peak_rss else MEMORY_COLUMNS[:2]):
        mem.add_column(c, justify="left" if i == 0 else "right")
    for row in memory_rows(r):
        mem.add_row(*(row if cfg.peak_rss else row[:2]))
    out.print(mem)
    out.print(device_note(r))
    for note in kernel_notes(r) + r["provenance"]:
        out.print(note, soft_wrap=True)
    if res.json_path:
        out.print(f"json: {res.json_path}")
    if res.plot_path:
        out.print(f"plot: {res.plot_path}")



def _op_bench(op, dtype, batch, seq, device, compare, warmup, iters, seed, json_out, model, engine) -> None:
    from rich.console import Console
    from rich.table import Table

    from debx.artifacts import refuse_overwriting_inputs
    from debx.bench import parse_int_list
    from debx.opbench import LAYER_ENTRIES, OP_ENTRIES, OpBenchConfig, op_table_rows, run_op_bench

    if model or engine:
        raise ConfigError("--op times an op on its own: leave out --model/--engine")
    refuse_overwriting_inputs({"--json": json_out}, [])
    entries = tuple(c.strip() for c in compare.split(",") if c.strip()) or OP_ENTRIES + LAYER_ENTRIES
    cfg = OpBenchConfig(op=op, batches=parse_int_list(batch, "--batch"), seqs=parse_int_list(seq, "--seq"),
                        device=device or "cuda", dtype=dtype, compare=entries, warmup=max(1, warmup),
                        iters=iters or 50, seed=seed)

    con = Console(stderr=True)
    report = run_op_bench(cfg, progress=verbosity.progress(lambda msg: con.print(f"[dim]{msg}[/dim]")))
    header, rows = op_table_rows(report)
    t = Table(title=f"debx bench --op {op} · {report['device']} · {report['dtype']} · "
                    f"H={report['heads']} D={report['head_size']} · median ms")
    for i, c in enumerate(header):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*row)
    out = Console() if Console().is_terminal else Console(width=170)
    out.print(t)
    if json_out:
        from debx.artifacts import write_json_atomic

        write_json_atomic(json_out, report)
        out.print(f"json: {json_out}")
