"""`debx train`: fine-tune a checkpoint or train a preset on a GLUE task or a user task."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from debx import verbosity

EXAMPLES = (
    ("debx train --task sst2 --preset tiny -o runs/sst2 --epochs 1", "a tiny DeBERTa-v3 from scratch"),
    ("debx train --task mnli --model microsoft/deberta-v3-base-folder -o runs/mnli --lr 2e-5", "fine-tune a checkpoint"),
    ("torchrun --nproc_per_node 2 -m debx train --task sst2 --preset small -o runs/sst2 --device cuda",
     "data-parallel on two GPUs"),
)


def command(
    task: str = typer.Option(..., "--task", "-t", help="GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) or a task spec file (.yaml/.json)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output folder: becomes a Hugging Face checkpoint (best dev score)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="GLUE-layout data folder. Default: $GLUE_DIR, then ../shared/glue."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint folder to fine-tune (Hugging Face format)."),
    preset: Optional[str] = typer.Option(None, "--preset", help="Train from scratch with a preset shape: tiny, xsmall, small, base, large."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="From scratch: spm.model to use. Default: train one on the task's training text."),
    vocab_size: int = typer.Option(8000, "--vocab-size", help="Vocabulary of the trained SentencePiece tokenizer."),
    epochs: float = typer.Option(3.0, "--epochs", help="Training epochs (fractions allowed)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate. Default 2e-5 fine-tuning, 1e-3 from scratch."),
    batch_size: int = typer.Option(32, "--batch-size", help="Global batch size (all processes together)."),
    max_seq_len: int = typer.Option(128, "--max-seq-len", help="Longest sequence in tokens, incl. [CLS]/[SEP] (over max_position_embeddings only for models without absolute position embeddings)."),
    warmup: float = typer.Option(0.06, "--warmup", help="Warmup: fraction of steps (<1) or number of steps (>=1)."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Gradient accumulation steps."),
    weight_decay: float = typer.Option(0.01, "--weight-decay", help="AdamW weight decay (not on biases/LayerNorm)."),
    seed: int = typer.Option(42, "--seed", help="Random seed: the same seed gives the same model."),
    eval_every: int = typer.Option(0, "--eval-every", help="Optimizer steps between dev evaluations (0: each epoch)."),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="Override hidden and attention dropout."),
    max_train_samples: Optional[int] = typer.Option(None, "--max-train-samples", help="Use only the first N training rows."),
    overflow: str = typer.Option("truncate", "--overflow", help="Sequences over --max-seq-len: truncate (with a warning) or refuse."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for PyTorch."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUTPUT/last (optimizer, scheduler and RNG state)."),
    stop_after: Optional[int] = typer.Option(None, "--stop-after", help="Stop after N optimizer steps in this run (resumable)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto (cuda when PyTorch sees a GPU). Under "
                               "torchrun each process takes cuda:LOCAL_RANK (nccl), or the CPU (gloo)."),
    precision: str = typer.Option("fp32", "--precision", help="Mixed precision for training: fp32, bf16 (autocast; "
                                  "CPU or GPU) or fp16 (autocast + GradScaler; GPU only). Weights stay float32."),
) -> None:
    """Fine-tune (--model) or train from a preset (--preset) on a GLUE or user task; keeps the best dev checkpoint."""
    from rich.console import Console
    from rich.table import Table

    from debx.train import TrainConfig, train

    cfg = TrainConfig(task=task, output_dir=output, data_dir=data_dir, model=model, preset=preset, tokenizer=tokenizer,
                      vocab_size=vocab_size, epochs=epochs, lr=lr, batch_size=batch_size, max_seq_len=max_seq_len,
                      warmup=warmup, grad_accum=grad_accum, weight_decay=weight_decay, seed=seed, eval_every=eval_every,
                      dropout=dropout, max_train_samples=max_train_samples, overflow=overflow, threads=threads,
                      resume=resume, stop_after=stop_after, device=device, precision=precision,
                      progress=verbosity.info())
    result = train(cfg)
    if result["dev"] is None:
        return
    con = Console()
    con.print(f"[bold]{result['task']} dev[/bold] (best, step {result['best_step']}/{result['steps']})")
    t = Table()
    for k in result["dev"]:
        t.add_column(k, justify="right")
    t.add_row(*(f"{v:.2f}" for v in result["dev"].values()))
    con.print(t)
    con.print(f"checkpoint: {output}   trained {result['train_seconds']:.0f} s on {result['world_size']} process(es), "
              f"{result['device']}, {result['precision']}")
