"""Prove an exported ONNX file equal to the PyTorch model it came from: names -> axes -> shapes -> values, per output
and precision. Every failure is collected; one `ValidationFailed` lists them all.

Inputs are real sentences (GLUE dev sets when a GLUE folder is found, else a small built-in set), tokenized by the
checkpoint's own tokenizer: batch 1 and > 1, a 1-token sequence, short ones, pairs with padding, and the maximum
length. Pinned batch/sequence sizes are honoured.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from debx.artifacts import read_onnx, read_sidecar, stale_reason
from debx.contract import HEAD_OUTPUTS, input_names
from debx.errors import ConfigError, DebxError, GateFailed
from debx.exporters.onnx_config import BATCH_AXIS, SEQUENCE_AXIS, Tolerance, tolerance_for
from debx.runtimes.compare import Case, Comparator, OutputDiff
from debx.tasks import load_split

FALLBACK_SENTENCES = [  # used when no GLUE folder is around (e.g. a user's machine); plain, varied English
    "The film is a quiet, patient portrait of a family that slowly learns to talk again.",
    "A waste of two perfectly good actors.",
    "Revenue rose 4 percent in the third quarter, the company said on Tuesday.",
    "The company said on Tuesday that third-quarter revenue had grown by four percent.",
    "It rained.",
    "Nobody expected the committee to approve the plan before the end of the year, but it did.",
    "The bridge, which was built in 1932, will be closed for repairs until spring.",
    "Is this the way to the station?",
]


class ValidationFailed(GateFailed):
    """The exported model does not match the PyTorch model (every failed check is listed)."""


@dataclass
class ValidationReport:
    precision: str
    attention: str | None
    tolerance: dict
    cases: list[dict] = field(default_factory=list)  # name, shape, max_abs_diff per output, argmax agreement
    max_abs_diff: float = 0.0
    argmax_agreement: float | None = None  # near ties (see judge) count as agreeing
    argmax_near_ties: int = 0
    failures: list[str] = field(default_factory=list)
    text_source: str = ""
    reference: str = "debx PyTorch model (FP32, CPU)"
    stale: str | None = None  # the file was not made from this checkpoint as it is now (debx.artifacts.stale_reason)

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------------


def real_sentences(data_dir: str | Path | None = None) -> tuple[list[str], list[tuple[str, str]], str]:
    """(single sentences, sentence pairs, where they came from): GLUE SST-2 and MRPC dev, else the built-in set."""
    try:
        singles = [e.text_a for e in load_split("sst2", data_dir, "dev", limit=64)]
        pairs = [(e.text_a, e.text_b) for e in load_split("mrpc", data_dir, "dev", limit=16)]
        return singles, pairs, "GLUE SST-2 + MRPC dev"
    except DebxError:
        s = FALLBACK_SENTENCES
        return list(s), list(zip(s[::2], s[1::2])), "built-in sentences (no GLUE folder found)"


def _tokenizer_or_none(checkpoint: Path | None):
    if checkpoint is None:
        return None
    folder = Path(checkpoint).resolve()
    stamp = tuple(sorted((f.name, f.stat().st_mtime_ns) for f in folder.iterdir() if "token" in f.name or
                         f.suffix == ".model"))
    return _load_tokenizer_cached(str(folder), stamp)


@functools.lru_cache(maxsize=4)
def _load_tokenizer_cached(folder: str, stamp: tuple):  # stamp: tokenizer file names + mtimes (cache key only)
    from debx.tokenizer import load_tokenizer

    try:
        return load_tokenizer(folder)
    except DebxError:
        return None


def _encode(tokenizer, texts, max_len: int, vocab_size: int, rng: np.random.Generator
            ) -> tuple[list[list[int]], list[list[int]]]:
    """(ids, token types) per text; a text is a sentence or an (a, b) pair. Without a tokenizer: random
    in-vocabulary ids, one per word, in the [CLS] a [SEP] b [SEP] layout."""
    pairs = [t if isinstance(t, tuple) else (t, None) for t in texts]
    if tokenizer is not None:
        from debx.tokenizer import encode

        has_b = any(b is not None for _, b in pairs)
        enc = encode(tokenizer, [a for a, _ in pairs], [b for _, b in pairs] if has_b else None, max_len)
        return enc.input_ids, enc.token_type_ids
    ids, types = [], []
    for a, b in pairs:
        na, nb = len(a.split()), len(b.split()) if b else 0
        row = [1, *rng.integers(5, vocab_size, na).tolist(), 2]
        seg = [0] * len(row)
        if b:
            row += [*rng.integers(5, vocab_size, nb).tolist(), 2]
            seg += [1] * (nb + 1)
        ids.append(row[:max_len])
        types.append(seg[:max_len])
    return ids, types


def _feeds(ids: list[list[int]], types: list[list[int]], pad_id: int, n: int | None, with_types: bool
           ) -> dict[str, np.ndarray]:
    """int64 (B, n) feeds, right-padded (n None: the longest row)."""
    n = n or max(len(r) for r in ids)
    out_ids = np.full((len(ids), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), n), dtype=np.int64)
    tt = np.zeros((len(ids), n), dtype=np.int64)
    for r, row in enumerate(ids):
        row = row[:n]
        out_ids[r, :len(row)] = row
        mask[r, :len(row)] = 1
        tt[r, :len(row)] = types[r][:n]
    feeds = {"input_ids": out_ids, "attention_mask": mask}
    if with_types:
        feeds["token_type_ids"] = tt
    return feeds


def validation_cases(checkpoint: Path | None, cfg, max_len: int, *, batch: int | None = None, seq: int | None = None,
                     data_dir: str | Path | None = None) -> tuple[list[Case], str]:
    """The standard validation inputs for a model (see the module doc), and a note on where the text came from."""
    tokenizer = _tokenizer_or_none(checkpoint)
    singles, pairs, source = real_sentences(data_dir)
    if tokenizer is None:
        source += ", random token ids (the checkpoint has no tokenizer)"
    rng = np.random.default_rng(0)
    max_len = seq or max_len
    with_types = cfg.type_vocab_size > 0
    cls_id = getattr(tokenizer, "cls_token_id", None) or 1

    def enc(texts):
        return _encode(tokenizer, texts, max_len, cfg.vocab_size, rng)

    words = sum(len(t.split()) for t in singles)
    long_text = " ".join(singles * (max_len // max(words, 1) + 2))  # more words than max_len: truncated to it
    specs = [  # name, (ids, types), padded length (None: the longest row)
        ("1 token", ([[cls_id]], [[0]]), None),
        ("short sentence", enc(singles[:1]), None),
        ("pairs with padding", enc(pairs[:4]), None),
        ("sentences with padding", enc(singles[1:9]), None),
        ("maximum length with padding", enc([long_text, singles[9 % len(singles)]]), max_len),
        *((f"sentences {i}-{i + 15}", enc(singles[i:i + 16]), None) for i in (16, 32) if len(singles) >= i + 16),
    ]
    cases = []
    for name, (ids, types), n in specs:
        if batch is not None:  # pinned batch: repeat or cut the rows to exactly `batch`
            reps = -(-batch // len(ids))
            ids, types = (ids * reps)[:batch], (types * reps)[:batch]
        cases.append(Case(name, _feeds(ids, types, cfg.pad_token_id, seq or n, with_types)))
    too_big = max(int(c.feeds["input_ids"].max()) for c in cases)
    if too_big >= cfg.vocab_size:
        raise ConfigError(f"the checkpoint's tokenizer produces id {too_big} but the model has vocab_size "
                          f"{cfg.vocab_size}: tokenizer and model do not belong together")
    return cases, source


# ---------------------------------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------------------------------


def expected_axes(input_names: list[str], output_name: str, token_level: bool, batch: int | None,
                  seq: int | None, names: tuple[str, str] = (BATCH_AXIS, SEQUENCE_AXIS)) -> dict[str, dict[int, str | int]]:
    io = {0: batch if batch is not None else names[0], 1: seq if seq is not None else names[1]}
    axes = {n: dict(io) for n in input_names}
    axes[output_name] = dict(io) if token_level else {0: io[0]}
    return axes


def _argmax_kind(head: str, cfg) -> str | None:
    if head == "classification" and cfg.num_labels > 1:
        return "rows"
    if head == "masked-lm":
        return "tokens"
    return None


def judge(diffs: list[OutputDiff], tol: Tolerance) -> tuple[list[str], float, float | None, int]:
    """Failures, the overall max abs diff, the argmax agreement and the near-tie flips of a candidate's diffs.

    A flip between two classes whose reference logits are within 2 * atol of each other is allowed by the value
    tolerance itself, so it counts as agreement (and is reported as a near tie)."""
    failures = []
    worst = 0.0
    total = same = ties = 0
    for d in diffs:
        where = f"[{d.case}] {d.output}"
        if d.shape is None:
            failures.append(f"{where}: output missing")
            continue
        if d.shape != d.ref_shape:
            failures.append(f"{where}: shape {d.shape} != PyTorch {d.ref_shape}")
            continue
        if not d.finite:
            failures.append(f"{where}: inf/NaN in the output")
            worst = float("inf")
            continue
        worst = max(worst, d.max_abs_diff)
        if d.max_abs_diff > tol.atol:
            failures.append(f"{where}: max abs diff {d.max_abs_diff:.3g} > {tol.atol:g}")
        total += d.argmax_total
        same += d.argmax_same
        ties += d.argmax_near_ties
    agreement = (same + ties) / total if total else None
    if agreement is not None and agreement < tol.argmax_agreement:
        failures.append(f"argmax agreement {agreement:.2%} < {tol.argmax_agreement:.1%} "
                        f"({total - same - ties} of {total} differ beyond near ties)")
    return failures, worst, agreement, ties


def graph_facts(onnx_path: Path) -> dict:
    """What the file itself says: precision, attention mode, inputs/outputs (without loading external weights)."""
    import onnx

    from debx.runtimes.reference_ops import DEBX_OP, TRT_OP

    g = read_onnx(onnx_path).graph  # one line for a truncated file or missing external data
    ops = {n.op_type for n in g.node}
    fp16 = any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
    outputs = {o.name: len(o.type.tensor_type.shape.dim) for o in g.output}
    return {"precision": "fp16" if fp16 else "fp32",
            "attention": "debx" if DEBX_OP in ops else "trt" if TRT_OP in ops else "onnx",
            "inputs": [i.name for i in g.input], "outputs": outputs}


def validate_onnx(onnx_path: str | Path, checkpoint: str | Path | None = None, *, model=None, ckpt=None,
                  head: str | None = None, precision: str | None = None, attention: str | None = None,
                  max_seq_len: int | None = None, batch: int | None = None, seq: int | None = None,
                  data_dir: str | Path | None = None, check_overflow: bool = True, threads: int | None = None,
                  raise_on_failure: bool = True, axis_names: tuple[str, str] | None = None) -> ValidationReport:
    """Compare `onnx_path` with the PyTorch model of `checkpoint` (or an already loaded model/ckpt).

    Unspecified settings come from the file's sidecar, then from the graph itself.
    """
    import onnx

    from debx.exporters import checks
    from debx.runtimes.onnxruntime import OnnxRuntimeRunner
    from debx.runtimes.torch import TorchRunner, load_for_head, resolve_head

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ConfigError(f"{onnx_path}: no such ONNX file")
    side, facts = read_sidecar(onnx_path), graph_facts(onnx_path)
    shapes = side.get("shapes", {})
    precision = precision or side.get("precision") or facts["precision"]
    attention = attention or side.get("attention") or facts["attention"]
    batch = batch if batch is not None else shapes.get("batch") if isinstance(shapes.get("batch"), int) else None
    seq = seq if seq is not None else shapes.get("sequence") if isinstance(shapes.get("sequence"), int) else None
    if axis_names is None:  # the sidecar records names other than debx's (--optimum-axes)
        named = shapes.get("axis_names")
        axis_names = tuple(named) if isinstance(named, list) and len(named) == 2 else (BATCH_AXIS, SEQUENCE_AXIS)
    if head is None:
        head = side.get("head")
    if head is None:  # from the graph: hidden states, token logits or sequence logits
        out_name, rank = next(iter(facts["outputs"].items()))
        head = "embeddings" if out_name == "last_hidden_state" else "masked-lm" if rank == 3 else None
    if model is None:
        if checkpoint is None:
            raise ConfigError("validation needs the source checkpoint (--model CKPT_DIR)")
        model, ckpt, head = load_for_head(checkpoint, head)
        if side.get("gi_max_scope") and ckpt.config.gated_layers():  # the giMLP scope the file was exported with
            ckpt.config.set_gi_max_scope(side["gi_max_scope"], "the sidecar's gi_max_scope")
    else:
        head = resolve_head(ckpt.config, ckpt.head, head)
    cfg = ckpt.config
    max_len = max_seq_len or shapes.get("max_seq_len") or cfg.max_position_embeddings
    tol = tolerance_for(precision)
    report = ValidationReport(precision, attention, asdict(tol))
    report.stale = stale_reason(onnx_path, ckpt.path, ckpt.fingerprint, side)
    out_name, token_level = HEAD_OUTPUTS[head]
    in_names = input_names(cfg.type_vocab_size)

    # 1. names
    if facts["inputs"] != in_names:
        report.failures.append(f"inputs are {facts['inputs']}, expected {in_names}")
    if list(facts["outputs"]) != [out_name]:
        report.failures.append(f"outputs are {list(facts['outputs'])}, expected ['{out_name}'] for head {head}")
    # 2. axes (and the rest of the structural checks)
    graph = onnx.load(str(onnx_path), load_external_data=False)  # readable: graph_facts read it
    report.failures += checks.graph_problems(graph, mode=attention, num_layers=cfg.num_hidden_layers,
                                             expected_axes=expected_axes(in_names, out_name, token_level, batch, seq,
                                                                                        axis_names))
    if report.failures and any("outputs are" in f or "inputs are" in f for f in report.failures):
        return _finish(report, raise_on_failure)
    # 3 + 4. shapes and values on real inputs
    cases, report.text_source = validation_cases(ckpt.path, cfg, max_len, batch=batch, seq=seq, data_dir=data_dir)
    torch_runner = TorchRunner(ckpt.path, head=head, model=model, checkpoint=ckpt)
    ort_runner = OnnxRuntimeRunner(onnx_path, threads=threads)
    with torch_runner, ort_runner:
        diffs = Comparator(torch_runner, ort_runner).run(cases, {out_name: _argmax_kind(head, cfg)},
                                                         tie_margin=2 * tol.atol)[ort_runner.name]
    failures, report.max_abs_diff, report.argmax_agreement, report.argmax_near_ties = judge(diffs, tol)
    report.failures += failures
    inputs = {c.name: c.shape for c in cases}
    report.cases = [{"case": d.case, "batch": inputs[d.case][0], "seq": inputs[d.case][1], "output": d.output,
                     "output_shape": list(d.ref_shape), "max_abs_diff": d.max_abs_diff,
                     "argmax": f"{d.argmax_same}/{d.argmax_total}" if d.argmax_total else None} for d in diffs]
    # FP16: no intermediate may overflow on these real inputs
    if precision == "fp16" and check_overflow:
        from onnx.external_data_helper import uses_external_data

        from debx.exporters.fp16 import overflow_problems

        external = any(uses_external_data(t) for t in graph.graph.initializer)
        report.failures += overflow_problems(graph, [c.feeds for c in cases],
                                             model_dir=onnx_path.parent if external else None)
    return _finish(report, raise_on_failure)


def case_rows(report: ValidationReport) -> list[tuple[str, str, str, str]]:
    """(case, batch x seq, max abs diff, argmax agreement) per compared output, for printing."""
    return [(c["case"], f"{c['batch']}x{c['seq']}", "-" if c["max_abs_diff"] is None else f"{c['max_abs_diff']:.2e}",
             c["argmax"] or "-") for c in report.cases]


def print_report(console, title: str, report: ValidationReport) -> str:
    """Print the per-case table; return the one-line summary (max diff, tolerance, argmax agreement, text)."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("case", "batch x seq", "max abs diff", "argmax"):
        t.add_column(col, justify="left" if col == "case" else "right")
    for row in case_rows(report):
        t.add_row(*row)
    console.print(t)
    agree = "-" if report.argmax_agreement is None else f"{report.argmax_agreement:.2%}"
    return (f"max abs diff {report.max_abs_diff:.2e} (tolerance {report.tolerance['atol']:g}), argmax agreement "
            f"{agree}; text: {report.text_source}")


def _finish(report: ValidationReport, raise_on_failure: bool) -> ValidationReport:
    if report.failures and raise_on_failure:
        n = len(report.failures)
        why = f"{report.stale}; " if report.stale else ""  # differences between two models, said plainly first
        raise ValidationFailed(f"{why}validation failed ({n} problem{'s' if n > 1 else ''}): " + "; ".join(report.failures))
    return report
