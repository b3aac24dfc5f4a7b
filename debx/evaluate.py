"""Score a model on a task split with any runner, and write the report.

The model may be a checkpoint folder (PyTorch runner), an ONNX file (ONNX Runtime) or a TensorRT plan. Artifacts
carry a JSON sidecar (`model.onnx.json`) naming their source checkpoint, from which the tokenizer and the label map
are taken, and the rows used for calibration, which are excluded from the evaluation (and the report says so).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from debx import artifacts
from debx.artifacts import file_digest, package_versions, write_json_atomic
from debx.errors import ConfigError, DataError, check_at_least
from debx.metrics import compute_metrics, predictions_from_outputs
from debx.runtimes.rewrites import summary as rewrite_summary
from debx.runtimes import runner_for
from debx.tasks import Example, TaskSpec, check_model_labels, get_task, iter_split, split_path
from debx.tokenizer import OVERFLOW, encode, load_tokenizer


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
    chunk_rows: int = 2048  # rows read and tokenized at a time (batches are length-sorted within a chunk)

    def __post_init__(self) -> None:
        self.engine = Path(self.engine)
        check_at_least("--batch-size", self.batch_size)
        check_at_least("--max-seq-len", self.max_seq_len)
        check_at_least("--threads", self.threads)
        check_at_least("--limit", self.limit, 0)
        check_at_least("chunk_rows", self.chunk_rows)
        if self.overflow not in OVERFLOW:
            raise ConfigError(f"--overflow {self.overflow!r}: choose one of {', '.join(OVERFLOW)}")


@dataclass
class EvalResult:
    task: TaskSpec
    metrics: dict[str, float]
    predictions: np.ndarray
    labels: np.ndarray
    guids: list[str]
    report: dict


def source_checkpoint(engine: Path, sidecar: Mapping) -> Path | None:
    """The checkpoint folder itself, or the one an artifact's sidecar names (debx.artifacts.artifact_source)."""
    if engine.is_dir():
        return engine
    return artifacts.artifact_source(engine, sidecar).checkpoint


def label_permutation(task: TaskSpec, id2label: dict[int, str]) -> np.ndarray | None:
    """Map model output columns to task label indices when the checkpoint names its labels differently ordered."""
    if task.labels is None or not id2label or set(id2label.values()) != set(task.labels):
        return None
    perm = np.array([task.labels.index(id2label[i]) for i in range(len(id2label))])
    return None if (perm == np.arange(len(perm))).all() else perm


def excluded_rows(sidecar: Mapping, task: TaskSpec, split: str) -> set[str]:
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


class BatchStream:
    """Tokenized, length-sorted batches of an example stream, made `chunk_rows` examples at a time as the examples
    are read: at most one chunk of examples and its token ids are held at once, whatever the split's size.

    Iterating yields (examples, positions, feeds): the batch's examples, their positions in the stream (file order)
    and the padded feeds. `rows` and `truncated` count what has been read so far."""

    def __init__(self, examples: Iterable[Example], tokenizer, max_len: int, batch_size: int,
                 overflow: str = "truncate", chunk_rows: int = 2048) -> None:
        self.examples, self.tokenizer, self.max_len = examples, tokenizer, max_len
        self.batch_size, self.overflow, self.chunk_rows = batch_size, overflow, max(chunk_rows, batch_size)
        self.rows = self.truncated = 0

    def __iter__(self) -> Iterator[tuple[list[Example], np.ndarray, dict[str, np.ndarray]]]:
        pad = self.tokenizer.pad_token_id or 0
        it = iter(self.examples)
        while True:
            chunk = list(itertools.islice(it, self.chunk_rows))
            if not chunk:
                return
            pairs = any(e.text_b is not None for e in chunk)
            enc = encode(self.tokenizer, [e.text_a for e in chunk], [e.text_b for e in chunk] if pairs else None,
                         self.max_len, self.overflow)
            start, self.rows, self.truncated = self.rows, self.rows + len(chunk), self.truncated + enc.truncated
            order = np.argsort([len(x) for x in enc.input_ids], kind="stable")  # little padding per batch
            for s in range(0, len(order), self.batch_size):
                rows = order[s:s + self.batch_size]
                yield [chunk[i] for i in rows], start + rows, enc.batch(rows, pad_id=pad)


def _labeled(examples: Iterable[Example], excluded: set[str], task: TaskSpec, split: str) -> Iterator[Example]:
    for e in examples:
        if e.guid in excluded:
            continue
        if e.label is None:
            raise DataError(f"{task.name} {split}: the split has no labels; evaluation needs a labeled split")
        yield e


def _scores(engine: Path, task: TaskSpec, out: dict[str, np.ndarray]) -> np.ndarray:
    """The (B, labels) logits of a runner's outputs, checked against the task's label count."""
    y = out["logits"] if "logits" in out else next(iter(out.values()))
    if y.ndim == 1 and task.is_regression:
        y = y[:, None]
    if y.ndim != 2:
        raise ConfigError(f"{engine} outputs shape {tuple(y.shape)} per batch, not one row of scores per example: "
                          "evaluate a sequence classification or regression model")
    check_model_labels(task, y.shape[1], engine)
    return y


def evaluate(cfg: EvalConfig) -> EvalResult:
    """Score `cfg.engine` on a task split, streaming it: the split is read, tokenized and scored one chunk at a
    time (BatchStream), so memory stays flat whatever the split's size."""
    from debx.checkpoint import fingerprint, read_config

    engine = Path(cfg.engine)
    if not engine.exists():
        raise ConfigError(f"{engine}: no such file or directory")
    task = get_task(cfg.task)
    device = torch_device(engine, cfg.device)
    sidecar = artifacts.read_sidecar(engine)
    src = source_checkpoint(engine, sidecar)
    tok_src = cfg.tokenizer or src
    if tok_src is None:
        raise ConfigError(f"{engine}: no sidecar names its source checkpoint; pass --tokenizer CKPT_DIR")
    if engine.is_dir():
        recorded = artifacts.Source(engine, fingerprint(engine))
        stale = None
    else:
        recorded = artifacts.artifact_source(engine, sidecar)
        stale = artifacts.stale_reason(engine, sidecar=sidecar)
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

    data_file = split_path(task, cfg.data_dir, cfg.split)
    excluded = excluded_rows(sidecar, task, cfg.split)
    stream = BatchStream(_labeled(iter_split(task, cfg.data_dir, cfg.split, limit=cfg.limit), excluded, task,
                                  cfg.split), tokenizer, max_len, cfg.batch_size, cfg.overflow, cfg.chunk_rows)
    batches = iter(stream)
    first = next(batches, None)  # bad or unlabeled data fails here, before the model is loaded
    if first is None:
        raise DataError(f"{task.name} {cfg.split}: no examples to evaluate")

    runner = runner_for(engine, threads=cfg.threads, provider=cfg.provider, plugins=cfg.plugins,
                        device=device, gi_max_scope=gi_scope)
    perm = label_permutation(task, model_cfg.id2label if model_cfg else {})
    parts: list[tuple[np.ndarray, np.ndarray, list]] = []  # (positions, predictions, examples) per batch
    t0 = time.perf_counter()
    progress = None
    if cfg.progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        progress = Progress(TextColumn(f"[bold]eval[/] {task.name}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), transient=True)
        progress.start()
        bar = progress.add_task("eval", total=cfg.limit)
    try:
        with runner:
            for examples, positions, feeds in itertools.chain([first], batches):
                y = _scores(engine, task, runner.infer(feeds))
                if perm is not None:
                    y = y[:, np.argsort(perm)]
                parts.append((positions, predictions_from_outputs(task, y), [(e.guid, e.label) for e in examples]))
                if progress is not None:
                    progress.update(bar, advance=len(examples))
            described = runner.describe()
    finally:
        if progress is not None:
            progress.stop()
    seconds = time.perf_counter() - t0
    order = np.argsort(np.concatenate([p for p, _, _ in parts]), kind="stable")  # back to file order
    preds = np.concatenate([y for _, y, _ in parts])[order]
    rows = [r for _, _, rs in parts for r in rs]
    guids = [rows[i][0] for i in order]
    labels = np.asarray([rows[i][1] for i in order])
    metrics = compute_metrics(task, preds, labels)
    report = {
        "task": task.name,
        "split": cfg.split,
        "data": str(data_file),
        "n_examples": len(guids),
        "excluded_calibration_rows": len(excluded),
        "truncated": stream.truncated,
        "metrics": metrics,
        "primary_metric": task.primary_metric,
        "engine": {"path": str(engine), "kind": "checkpoint" if engine.is_dir() else engine.suffix.lstrip("."),
                   "fingerprint": recorded.fingerprint if engine.is_dir() else file_digest(engine),
                   # the checkpoint the artifact was made from, as recorded when it was made (not as it is now)
                   "source": recorded.to_dict(), "source_fingerprint": recorded.fingerprint, "stale": stale,
                   "precision": sidecar.get("precision", "fp32")},
        "runner": described,
        "device": described.get("device") or ("cuda" if engine.suffix.lower() in (".plan", ".engine") else None),
        "seconds": round(seconds, 3),
        "versions": package_versions(),
        "predictions": preds.tolist(),
        "guids": guids,
    }
    return EvalResult(task, metrics, preds, labels, guids, report)


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


class CandidateGate:
    """Scores candidate model files on one split and gates each against a reference, evaluated once (at the first
    candidate) with the same settings. The evaluator of `debx calibrate --auto`: the CLI builds it
    (`candidate_gate`) and hands it to debx.calib.calibrate.calibrate, so calibration never imports evaluation."""

    def __init__(self, cfg: EvalConfig, gate_cfg) -> None:
        self.cfg, self.gate_cfg = cfg, gate_cfg  # cfg.engine: the reference
        self._reference: dict | None = None

    @property
    def mode(self) -> str:  # the gate's name, for records and messages
        return self.gate_cfg.mode

    def __call__(self, candidate: Path):
        """GateResult of the model file `candidate` (with its sidecar beside it) against the reference."""
        from dataclasses import replace

        from debx.gate import gate_reports

        if self._reference is None:
            self._reference = evaluate(self.cfg).report
        res = evaluate(replace(self.cfg, engine=candidate))
        return gate_reports(res.task, self._reference, res.report, res.labels, self.gate_cfg)


def candidate_gate(calib_cfg, gate_cfg) -> CandidateGate:
    """The `--auto` evaluator for a debx.calib.calibrate.CalibrateConfig: candidates scored on its --auto split (and row
    limit), gated against its reference (default: the input model)."""
    auto = calib_cfg.auto_cfg
    return CandidateGate(EvalConfig(task=calib_cfg.task, engine=calib_cfg.reference or calib_cfg.model,
                                    data_dir=calib_cfg.data_dir, split=auto.eval_split, tokenizer=calib_cfg.tokenizer,
                                    batch_size=auto.batch_size, threads=calib_cfg.threads, limit=auto.eval_limit,
                                    progress=False), gate_cfg)


def provenance_notes(report: dict, reference: dict | None = None) -> list[str]:
    """Warnings about where the scored model came from: a stale artifact (its source checkpoint changed since it was
    made), and a candidate that was not made from the reference checkpoint it is gated against."""
    eng = report.get("engine") or {}
    notes = [f"warning: {eng['stale']}"] if eng.get("stale") else []
    ref = (reference or {}).get("engine") or {}
    made_from = (eng.get("source") or {}).get("fingerprint")
    if eng.get("kind") != "checkpoint" and ref.get("kind") == "checkpoint" and made_from and ref.get("fingerprint") \
            and made_from != ref["fingerprint"]:
        notes.append(f"warning: {Path(eng['path']).name} was not made from the reference {ref['path']} (made from "
                     f"fingerprint {made_from}, the reference has {ref['fingerprint']}): the gate compares two "
                     "different models")
    return notes


def kernel_notes(report: dict) -> list[str]:
    """The graph rewrite steps that ran as the runner opened the file (debx.runtimes.rewrites), which INT8 matmul
    kernel family (amx, avx512-vnni, avx-vnni, avx2, ort) and attention mode (amx-bf16, avx512-bf16, float32) scored
    an INT8 file on the CPU, with the native ops, and what ran debx's custom nodes (the native library, or the NumPy
    reference)."""
    from debx.runtimes.int8_cpu import kernel_summary

    runner = report.get("runner") or {}
    ops = f"debx custom ops: {runner['debx_ops']}" if runner.get("debx_ops") else None
    return [line for line in (rewrite_summary(runner), kernel_summary(runner), ops) if line]


def gate_notes(report: dict, reference: dict | None = None) -> list[str]:
    notes = provenance_notes(report, reference) + kernel_notes(report)
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
    write_markdown(md, [result], gate_notes(report, reference))
    plot(png, [result], title=f"{result.task}: {result.candidate_name} vs {result.reference_name}")
    return md, png


def evaluate_task(task: str | Path, engine: str | Path, **options) -> EvalResult:
    """The API's evaluate (debx.api.evaluate): EvalConfig fields as keywords; progress off unless progress=True."""
    options.setdefault("progress", False)
    return evaluate(EvalConfig(task=str(task), engine=Path(engine), **options))


class _CallableModule(types.ModuleType):
    """`from debx import evaluate` names this module (a package attribute cannot be both a submodule and a
    function), so the module is callable: `evaluate(task, engine, **EvalConfig fields)` runs evaluate_task."""

    def __call__(self, task, engine, **options) -> EvalResult:
        return evaluate_task(task, engine, **options)


sys.modules[__name__].__class__ = _CallableModule
