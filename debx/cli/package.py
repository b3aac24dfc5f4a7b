"""`debx package`: deployable layouts of an exported model (a Triton Inference Server model repository)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from debx.triton import TritonConfig, package_triton

EXAMPLES = (
    ("debx package runs/sst2.onnx --triton runs/triton", "ensemble debx = debx_tokenizer (Python) -> debx_model"),
    ("debx package runs/sst2.debx.onnx --triton repo --name sst2 --max-batch-size 64 --pad-to 64",
     "a graph with debx nodes: the repository names the op library"),
)


def command(
    model: Path = typer.Argument(..., help="The ONNX export to serve (its sidecar names the tokenizer's checkpoint)."),
    triton: Path = typer.Option(..., "--triton", help="Model repository folder to write (replaced as a whole)."),
    name: str = typer.Option("debx", "--name", help="Ensemble name; the parts are <name>_tokenizer, <name>_model."),
    max_batch_size: int = typer.Option(32, "--max-batch-size", help="Triton's max_batch_size for every model."),
    pad_to: Optional[int] = typer.Option(None, "--pad-to", help="Tokens per row (requests are padded to it so the "
                                         "dynamic batcher can batch them). Default: min(128, the export's limit)."),
    max_queue_delay_us: int = typer.Option(1000, "--max-queue-delay-us", help="Dynamic batcher's wait to fill a batch."),
    ops_library: str = typer.Option("/opt/debx/lib/libdebx_ort_ops.so", "--ops-library", help="Path of "
                                    "libdebx_ort_ops.so on the server (graphs with debx nodes; see debx ops-path)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Checkpoint folder with the tokenizer files "
                                             "(default: the export's source checkpoint)."),
) -> None:
    """Write a Triton Inference Server model repository for an ONNX export: the model (ONNX Runtime backend, dynamic
    batching), tokenization as a Python-backend model, and an ensemble that takes text."""
    res = package_triton(TritonConfig(model=model, output=triton, name=name, max_batch_size=max_batch_size,
                                      pad_to=pad_to, max_queue_delay_us=max_queue_delay_us, ops_library=ops_library,
                                      tokenizer=tokenizer))
    print(f"wrote {res.repository}: {', '.join(res.models)} (rows padded to {res.pad_to} tokens"
          + (f"; op library {ops_library}" if res.custom_ops else "") + ")")
