"""Score a model on a task split with any runner, and write the report.

The model may be a checkpoint folder (PyTorch runner), an ONNX file (ONNX Runtime) or a TensorRT plan. Artifacts
carry a JSON sidecar (`model.onnx.json`) naming their source checkpoint, from which the tokenizer and the label map
are taken, and the rows used for calibration, which are excluded from the evaluation (and the report says so).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from debx import artifacts
from debx.artifacts import file_digest, package_versions, write_json_atomic
from debx.errors import ConfigError, DataError
from debx.metrics import compute_metrics, predictions_from_outputs
from debx.tasks import TaskSpec, get_task, load_split, split_path
from debx.tokenizer import encode, load_tokenizer


@dataclass
class EvalConfig:
    task: str
    engine: Path  # checkpoint folder | model.onnx | model.plan
    data_dir: Path | None = None
    split: str = "dev"
    tokenizer: Path | None = None  # default: the checkpoint folder, or the artifact sidecar's source checkpoint
    batch_size: int = 32
    max_seq_len: int | None = None  # default: the model limit
    overflow: str = "truncate"
    threads: int | None = None
    provider: str | None = None  # onnxruntime execution provider: cpu | cuda | tensorrt
    device: str | None = None  # PyTorch (checkpoint folder) only: cpu | cuda | auto (default auto)
    plugins: list[Path] = field(default_factory=list)  # TensorRT plugin libraries
    limit: int | None = None
    progress: bool = True
    gi_max_scope: str | None = None  # giMLP: "batch" | "example" for a checkpoint (None: its config.json); an exported
    # artifact has the scope in its graph, so it must match what it was exported with


@dataclass
class EvalResult:
    task: TaskSpec
    metrics: dict[str, float]
    predictions: np.ndarray
    labels: np.ndarray
    guids: list[str]
    report: dict


def read_sidecar(engine: Path) -> dict:
    """The JSON written next to an artifact (`<file>.json`), or {} for a checkpoint folder / missing sidecar."""
    return artifacts.read_sidecar(engine, strict=True) if engine.is_file() else {}


def source_checkpoint(engine: Path, sidecar: dict) -> Path | None:
    if engine.is_dir():
        return engine
    src = sidecar.get("source") or {}
    p = (src.get("path") or src.get("checkpoint")) if isinstance(src, dict) else src  # export sidecars: "checkpoint"
    return Path(p) if p else None


def label_permutation(task: TaskSpec, id2label: dict[int, str]) -> np.ndarray | None:
    """Map model output columns to task label indices when the checkpoint names its labels differently ordered."""
    if task.labels is None or not id2label or set(id2label.values()) != set(task.labels):
        return None
    perm = np.array([task.labels.index(id2label[i]) for i in range(len(id2label))])
    return None if (perm == np.arange(len(perm))).all() else perm


def excluded_rows(sidecar: dict, task: TaskSpec, split: str) -> set[str]:
    """Rows an artifact was calibrated on; they never count in its evaluation."""
    cal = sidecar.get("calibration") or {}
    if cal.get("task") in (task.name, None) and cal.get("split") == split:
        return set(cal.get("rows") or [])
    return set()


def torch_device(engine: Path, device: str | None) -> str | None:
    """The --device for the runner: auto by default for a checkpoint folder (PyTorch); refused for model files,
    whose device is the ONNX Runtime provider (--provider) or the TensorRT GPU."""
    from debx.device import check_device_name, resolve_device

    if Path(engine).is_dir():
        device = check_device_name(device)
        resolve_device(device)  # a missing GPU stops here, before the data is read
        return device
    if device is not None:
        raise ConfigError(f"--device applies to a checkpoint folder (PyTorch); {Path(engine).name} runs on ONNX Runtime "
                          "or TensorRT: choose its device with --provider cpu|cuda|tensorrt")
    return None


def evaluate(cfg: EvalConfig) -> EvalResult:
    from debx.checkpoint import fingerprint, read_config
    from debx.runtimes import runner_for

    engine = Path(cfg.engine)
    if not engine.exists():
        raise ConfigError(f"{engine}: no such file or directory")
    task = get_task(cfg.task)
    device = torch_device(engine, cfg.device)
    sidecar = read_sidecar(engine)
    src = source_checkpoint(engine, sidecar)
    tok_src = cfg.tokenizer or src
    if tok_src is None:
        raise ConfigError(f"{engine}: no sidecar names its source checkpoint; pass --tokenizer CKPT_DIR")
    tokenizer = load_tokenizer(tok_src)
    model_cfg = read_config(src)[0] if src is not None and (src / "config.json").is_file() else None
    max_len = cfg.max_seq_len or (model_cfg.max_position_embeddings if model_cfg else 512)
    if model_cfg is not None:  # only absolute position embeddings limit the length; relative positions take any
        model_cfg.check_length(max_len, "--max-seq-len")
    gi_scope = cfg.gi_max_scope
    if gi_scope is not None and engine.is_dir() and model_cfg is not None:
        model_cfg.set_gi_max_scope(gi_scope)  # checked now (value, giMLP model), applied by the PyTorch runner
    elif gi_scope is not None:
        exported = sidecar.get("gi_max_scope")
        if exported != gi_scope:
            raise ConfigError(f"--gi-max-scope {gi_scope}: {engine.name} was exported with gi_max_scope "
                              f"{exported or 'unset (not a giMLP export)'}, which its graph fixes; re-export it with "
                              f"debx export --gi-max-scope {gi_scope}, or evaluate the checkpoint (--model)")
        gi_scope = None  # the graph already does it

    examples = load_split(task, cfg.data_dir, cfg.split, limit=cfg.limit)
    excluded = excluded_rows(sidecar, task, cfg.split)
    if excluded:
        examples = [e for e in examples if e.guid not in excluded]
    if not examples:
        raise DataError(f"{task.name} {cfg.split}: no examples to evaluate")
    if any(e.label is None for e in examples):
        raise DataError(f"{task.name} {cfg.split}: the split has no labels; evaluation needs a labeled split")
    pairs = examples[0].text_b is not None
    enc = encode(tokenizer, [e.text_a for e in examples], [e.text_b for e in examples] if pairs else None, max_len,
                 cfg.overflow)
    labels = np.asarray([e.label for e in examples])

    runner = runner_for(engine, threads=cfg.threads, provider=cfg.provider, plugins=cfg.plugins,
                        device=device, gi_max_scope=gi_scope)
    order = np.argsort([len(x) for x in enc.input_ids], kind="stable")  # length-sorted batches: little padding
    logits = None
    t0 = time.perf_counter()
    progress = None
    if cfg.progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(TextColumn(f"[bold]eval[/] {task.name}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), transient=True)
        progress.start()
        bar = progress.add_task("eval", total=len(order))
    try:
        with runner:
            for s in range(0, len(order), cfg.batch_size):
                rows = order[s:s + cfg.batch_size]
                batch = enc.batch(rows, pad_id=tokenizer.pad_token_id or 0)
                out = runner.infer(batch)
                y = out["logits"] if "logits" in out else next(iter(out.values()))
                if logits is None:
                    logits = np.zeros((len(order),) + y.shape[1:], dtype=np.float32)
                logits[rows] = y
                if progress is not None:
                    progress.update(bar, advance=len(rows))
            described = runner.describe()
    finally:
        if progress is not None:
            progress.stop()
    seconds = time.perf_counter() - t0
    perm = label_permutation(task, model_cfg.id2label if model_cfg else {})
    if perm is not None:
        logits = logits[:, np.argsort(perm)]
    preds = predictions_from_outputs(task, logits)
    metrics = compute_metrics(task, preds, labels)
    report = {
        "task": task.name,
        "split": cfg.split,
        "data": str(split_path(task, cfg.data_dir, cfg.split)),
        "n_examples": len(examples),
        "excluded_calibration_rows": len(excluded),
        "truncated": enc.truncated,
        "metrics": metrics,
        "primary_metric": task.primary_metric,
        "engine": {"path": str(engine), "kind": "checkpoint" if engine.is_dir() else engine.suffix.lstrip("."),
                   "fingerprint": fingerprint(engine) if engine.is_dir() else file_digest(engine),
                   "source_fingerprint": fingerprint(src) if src is not None and (src / "config.json").is_file() else None,
                   "precision": sidecar.get("precision", "fp32")},
        "runner": described,
        "device": described.get("device") or ("cuda" if engine.suffix.lower() in (".plan", ".engine") else None),
        "seconds": round(seconds, 3),
        "versions": package_versions(),
        "predictions": preds.tolist(),
        "guids": [e.guid for e in examples],
    }
    return EvalResult(task, metrics, preds, labels, [e.guid for e in examples], report)


def write_report(report: dict, path: Path) -> None:
    """Atomic JSON write."""
    write_json_atomic(path, report)


# ---------------------------------------------------------------------------------------------------------------------
# The accuracy gate against a reference (`debx eval ... --reference CKPT_DIR|report.json --gate paper`)
# ---------------------------------------------------------------------------------------------------------------------


def load_reference_report(path: Path) -> dict:
    """A `debx eval` JSON report used as the reference (it must hold predictions and guids)."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"--reference {path}: not a readable JSON report ({e})") from None
    if not isinstance(report, dict) or "predictions" not in report or "guids" not in report:
        raise ConfigError(f"--reference {path}: not a debx eval report (no predictions/guids)")
    return report


def reference_report(cfg: EvalConfig, reference: Path) -> dict:
    """The reference's report: read from a report.json, or computed now with the candidate's settings."""
    from dataclasses import replace

    reference = Path(reference)
    if not reference.exists():
        raise ConfigError(f"--reference {reference}: no such file or directory")
    if reference.is_file() and reference.suffix.lower() == ".json":
        return load_reference_report(reference)
    # the candidate's --device is for PyTorch and --provider for ONNX Runtime: keep the one that fits the reference
    keep = {"provider": None} if reference.is_dir() else {"device": None}
    keep["gi_max_scope"] = None  # the reference is the model as its checkpoint defines it (giMLP: its own scope)
    if not reference.is_dir() and reference.suffix.lower() != ".onnx":
        keep["provider"] = None
    return evaluate(replace(cfg, engine=reference, **keep)).report


def gate_against(cfg: EvalConfig, result: EvalResult, reference: Path, gate_cfg) -> tuple:
    """(GateResult, reference report): the candidate `result` against `reference` on the same examples."""
    from debx.gate import gate_reports

    ref = reference_report(cfg, reference)
    return gate_reports(result.task, ref, result.report, result.labels, gate_cfg), ref


def gate_notes(report: dict) -> list[str]:
    notes = []
    if report.get("excluded_calibration_rows"):
        notes.append(f"{report['excluded_calibration_rows']} {report.get('split', 'dev')} rows were used to calibrate "
                     "the candidate and are excluded from this evaluation (and from the comparison).")
    if report.get("truncated"):
        notes.append(f"{report['truncated']} examples were truncated to the length limit.")
    return notes


def gate_output_paths(report_path: Path) -> tuple[Path, Path]:
    """Markdown and PNG written next to the JSON report: report.json -> report.md, report.png."""
    report_path = Path(report_path)
    return report_path.with_suffix(".md"), report_path.with_suffix(".png")


def write_gate_outputs(report_path: Path, report: dict, result, reference: dict) -> tuple[Path, Path]:
    """JSON (the candidate report with `gate` and `reference` entries), Markdown table and PNG plot."""
    from debx.report import plot, write_markdown

    report = dict(report)
    report["gate"] = result.to_dict()
    report["reference"] = {k: reference.get(k) for k in ("engine", "metrics", "n_examples", "split", "data")}
    md, png = gate_output_paths(report_path)
    write_report(report, report_path)
    write_markdown(md, [result], gate_notes(report))
    plot(png, [result], title=f"{result.task}: {result.candidate_name} vs {result.reference_name}")
    return md, png
