"""The accuracy gate: is a candidate (INT8, FP16, another runtime) as accurate as its FP32 reference on a task?

Modes (allowed drop of the task's primary metric, in metric points, candidate vs reference):
  paper     the DeBERTa paper's ± range for the task (TaskSpec.paper_tolerance: MNLI 0.2, QQP 0.1, QNLI 0.2,
            MRPC 0.5, RTE 1.0, SST-2 0.3, STS-B 0.3, CoLA 1.0, WNLI 0 = no drop); `tolerance` overrides it
  relative  a relative drop of at most `tolerance` percent of the reference (default 1%: the MLPerf and Intel
            Neural Compressor convention)
  none      report only; always passes

The decision uses the measured delta (candidate - reference); a drop exactly at the limit passes. The report adds a
paired bootstrap 95% interval of the delta (the same resampled examples scored for both models: seeded,
vectorised, 1000 resamples by default) and the share of examples whose prediction changed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from debx.errors import ConfigError, DataError

if TYPE_CHECKING:
    from debx.tasks import TaskSpec

MODES = ("paper", "relative", "none")
DEFAULT_RELATIVE = 1.0  # percent
_EPS = 1e-9  # metric points: float noise, not a difference


@dataclass
class GateConfig:
    mode: str = "paper"
    tolerance: float | None = None  # paper: allowed drop in points; relative: percent of the reference
    resamples: int = 1000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--gate {self.mode!r}: choose one of {', '.join(MODES)}")
        if self.tolerance is not None and not self.tolerance >= 0:
            raise ConfigError(f"--tolerance must be >= 0, got {self.tolerance}")
        if self.resamples < 1:
            raise ConfigError("bootstrap resamples must be >= 1")
        if not 0 < self.confidence < 1:
            raise ConfigError("confidence must be in (0, 1)")


@dataclass
class GateResult:
    task: str
    metric: str
    mode: str
    reference: float
    candidate: float
    delta: float  # candidate - reference, metric points
    ci_low: float
    ci_high: float
    confidence: float
    allowed_drop: float | None  # None in mode "none"
    changed: float  # share of examples whose prediction differs (class; regression: by > 1% of the score range)
    n: int
    passed: bool
    reference_name: str = "reference"
    candidate_name: str = "candidate"

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["verdict"] = self.verdict
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "GateResult":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ---------------------------------------------------------------------------------------------------------------------
# Tolerance
# ---------------------------------------------------------------------------------------------------------------------


def allowed_drop(task: "TaskSpec", reference: float, cfg: GateConfig) -> float | None:
    """Largest allowed drop in metric points (None: no gate)."""
    if cfg.mode == "none":
        return None
    if cfg.mode == "paper":
        return float(task.paper_tolerance if cfg.tolerance is None else cfg.tolerance)
    percent = DEFAULT_RELATIVE if cfg.tolerance is None else cfg.tolerance
    return abs(float(reference)) * percent / 100.0


def decide(delta: float, allowed: float | None) -> bool:
    return allowed is None or delta >= -allowed - _EPS


# ---------------------------------------------------------------------------------------------------------------------
# Metrics over many resamples at once: (R, n) index matrix -> (R,) metric values
# ---------------------------------------------------------------------------------------------------------------------


def _accuracy(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return 100.0 * (p == y).mean(axis=1)


def _f1(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    tp = ((p == 1) & (y == 1)).sum(axis=1)
    fp = ((p == 1) & (y != 1)).sum(axis=1)
    fn = ((p != 1) & (y == 1)).sum(axis=1)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 100.0 * 2 * tp / np.maximum(denom, 1), 0.0)


def _mcc(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multiclass MCC per row, from per-row confusion matrices built with one bincount."""
    classes = np.unique(np.concatenate([p.reshape(-1), y.reshape(-1)]))
    k = classes.size
    pi = np.searchsorted(classes, p)
    yi = np.searchsorted(classes, y)
    rows = np.arange(p.shape[0])[:, None]
    flat = (rows * k + yi) * k + pi  # (R, n) cell of (row, true, predicted)
    conf = np.bincount(flat.reshape(-1), minlength=p.shape[0] * k * k).reshape(p.shape[0], k, k).astype(np.float64)
    t = conf.sum(axis=2)  # (R, K) true counts
    q = conf.sum(axis=1)  # (R, K) predicted counts
    correct = np.trace(conf, axis1=1, axis2=2)
    total = conf.sum(axis=(1, 2))
    cov_pt = correct * total - (t * q).sum(axis=1)
    cov_p = total * total - (q * q).sum(axis=1)
    cov_t = total * total - (t * t).sum(axis=1)
    denom = np.sqrt(cov_p * cov_t)
    return np.where(denom > 0, 100.0 * cov_pt / np.where(denom > 0, denom, 1.0), 0.0)


def _corr_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    ss = np.sqrt((x * x).sum(axis=1) * (y * y).sum(axis=1))
    r = np.where(ss > 0, (x * y).sum(axis=1) / np.where(ss > 0, ss, 1.0), 0.0)
    return 100.0 * np.clip(r, -1.0, 1.0)


def rank_rows(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties share their mean rank) of every row of x (R, n)."""
    R, n = x.shape
    order = np.argsort(x, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    starts = np.ones((R, n), dtype=bool)
    starts[:, 1:] = xs[:, 1:] != xs[:, :-1]
    group = np.cumsum(starts, axis=1) - 1 + (np.arange(R) * n)[:, None]  # globally unique tie-group ids
    pos = np.broadcast_to(np.arange(n, dtype=np.float64), (R, n))
    size = np.bincount(group.reshape(-1), minlength=R * n)
    total = np.bincount(group.reshape(-1), weights=pos.reshape(-1), minlength=R * n)
    mean_rank = total[group] / size[group] + 1.0  # (R, n) in sorted order
    ranks = np.empty((R, n), dtype=np.float64)
    np.put_along_axis(ranks, order, mean_rank, axis=1)
    return ranks


def _pearson(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _corr_rows(p.astype(np.float64), y.astype(np.float64))


def _spearman(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return _corr_rows(rank_rows(p.astype(np.float64)), rank_rows(y.astype(np.float64)))


ROW_METRICS = {"accuracy": _accuracy, "f1": _f1, "mcc": _mcc, "pearson": _pearson, "spearman": _spearman}


def metric_rows(metric: str, predictions: np.ndarray, labels: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The metric on each resample: idx (R, n) example indices -> (R,) values in percent points."""
    if metric not in ROW_METRICS:
        raise ConfigError(f"no bootstrap implementation for metric {metric!r}")
    return ROW_METRICS[metric](np.asarray(predictions)[idx], np.asarray(labels)[idx])


def paired_bootstrap(metric: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, *,
                     resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                     chunk: int = 200) -> tuple[float, float]:
    """Percentile interval of metric(candidate) - metric(reference) over paired resamples of the examples."""
    n = len(labels)
    if n == 0:
        raise DataError("cannot bootstrap zero examples")
    rng = np.random.default_rng(seed)
    deltas = []
    for start in range(0, resamples, chunk):  # bounded memory: (chunk, n) indices at a time
        idx = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        deltas.append(metric_rows(metric, candidate, labels, idx) - metric_rows(metric, reference, labels, idx))
    d = np.concatenate(deltas)
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(d, alpha)), float(np.quantile(d, 1.0 - alpha))


# ---------------------------------------------------------------------------------------------------------------------
# The gate
# ---------------------------------------------------------------------------------------------------------------------


def align(reference_guids: list[str], reference_preds, candidate_guids: list[str], candidate_preds, labels):
    """Restrict both prediction sets to the candidate's examples that the reference also scored, in the candidate's
    order. labels belong to the candidate's examples. Returns (ref, cand, labels, guids)."""
    ref_pos = {g: i for i, g in enumerate(reference_guids)}
    keep = [i for i, g in enumerate(candidate_guids) if g in ref_pos]
    if not keep:
        raise DataError("the reference and the candidate share no examples (different task, split or files?)")
    ref = np.asarray(reference_preds)[[ref_pos[candidate_guids[i]] for i in keep]]
    cand = np.asarray(candidate_preds)[keep]
    return ref, cand, np.asarray(labels)[keep], [candidate_guids[i] for i in keep]


REGRESSION_CHANGE = 0.01  # a regression prediction "changed" when it moved by > 1% of the reference's spread


def changed_share(task: "TaskSpec", reference: np.ndarray, candidate: np.ndarray) -> float:
    """Share of examples whose prediction changed: another class, or (regression) a score that moved by more than
    1% of the range of the reference's scores (so FP16/INT8 rounding noise does not count as a change)."""
    if task.is_regression:
        ref = np.asarray(reference, dtype=np.float64)
        cand = np.asarray(candidate, dtype=np.float64)
        spread = float(np.ptp(ref)) if ref.size else 0.0
        return float(np.mean(np.abs(cand - ref) > max(REGRESSION_CHANGE * spread, 1e-6)))
    return float(np.mean(np.asarray(reference) != np.asarray(candidate)))


def gate(task: "TaskSpec", reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray,
         cfg: GateConfig | None = None, reference_name: str = "reference",
         candidate_name: str = "candidate") -> GateResult:
    """Compare paired predictions (same examples, same order) on the task's primary metric."""
    from debx.metrics import METRICS

    cfg = cfg or GateConfig()
    metric = task.primary_metric
    reference, candidate, labels = (np.asarray(a) for a in (reference, candidate, labels))
    if not (len(reference) == len(candidate) == len(labels)):
        raise DataError(f"gate: {len(reference)} reference, {len(candidate)} candidate predictions, {len(labels)} labels")
    if task.is_regression:
        reference, candidate, labels = (a.astype(np.float64) for a in (reference, candidate, labels))
    ref_value = METRICS[metric].fn(reference, labels)
    cand_value = METRICS[metric].fn(candidate, labels)
    delta = cand_value - ref_value
    lo, hi = paired_bootstrap(metric, reference, candidate, labels, resamples=cfg.resamples,
                              confidence=cfg.confidence, seed=cfg.seed)
    allowed = allowed_drop(task, ref_value, cfg)
    return GateResult(task=task.name, metric=metric, mode=cfg.mode, reference=ref_value, candidate=cand_value,
                      delta=delta, ci_low=lo, ci_high=hi, confidence=cfg.confidence, allowed_drop=allowed,
                      changed=changed_share(task, reference, candidate), n=len(labels),
                      passed=decide(delta, allowed), reference_name=reference_name, candidate_name=candidate_name)


def gate_reports(task: "TaskSpec", reference_report: dict, candidate_report: dict, labels: np.ndarray,
                 cfg: GateConfig | None = None) -> GateResult:
    """Gate two `debx eval` reports (predictions + guids); labels are those of the candidate's examples."""
    for key in ("predictions", "guids"):
        if key not in reference_report:
            raise DataError(f"the reference report has no {key!r}: write it with `debx eval ... --report`")
    if reference_report.get("task") not in (None, task.name):
        raise DataError(f"the reference report is for task {reference_report.get('task')!r}, not {task.name!r}")
    if reference_report.get("split") not in (None, candidate_report.get("split")):
        raise DataError(f"the reference report scored split {reference_report.get('split')!r}, the candidate "
                        f"{candidate_report.get('split')!r}")
    ref, cand, y, _ = align(reference_report["guids"], reference_report["predictions"], candidate_report["guids"],
                            candidate_report["predictions"], labels)
    return gate(task, ref, cand, y, cfg, reference_name=_name(reference_report, "reference"),
                candidate_name=_name(candidate_report, "candidate"))


def _name(report: dict, default: str) -> str:
    eng = report.get("engine") or {}
    precision = eng.get("precision")
    kind = eng.get("kind")
    if kind == "checkpoint":
        return f"pytorch {precision or 'fp32'}"
    if kind:
        return f"{kind} {precision or ''}".strip()
    return default
