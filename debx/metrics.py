"""Official GLUE metrics, NumPy only, on the 0-100 scale (percent points, as the DeBERTa paper reports them).

    accuracy   share of exact matches
    f1         binary F1 of the positive class (label 1)
    mcc        Matthews correlation (multiclass form; CoLA uses the binary case)
    pearson    Pearson correlation
    spearman   Spearman rank correlation (ties get average ranks)

Degenerate inputs (a constant prediction or label vector, no positive class anywhere) give 0.0, never NaN.
Non-finite predictions are not hidden: they propagate into the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np


class ScoredTask(Protocol):
    """What the metrics read of a task (debx.tasks.TaskSpec is one; metrics sit below tasks and do not import them)."""

    @property
    def name(self) -> str: ...

    @property
    def metrics(self) -> tuple[str, ...]: ...

    @property
    def is_regression(self) -> bool: ...

    @property
    def num_labels(self) -> int: ...


def _check_pair(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(predictions).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    if p.size == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return p, y


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    p, y = _check_pair(predictions, labels)
    return float(100.0 * np.mean(p == y))


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """Binary F1 of the class `positive`: 2 TP / (2 TP + FP + FN); 0.0 when that class appears nowhere."""
    p, y = _check_pair(predictions, labels)
    pred_pos, true_pos = p == positive, y == positive
    tp = np.sum(pred_pos & true_pos)
    fp = np.sum(pred_pos & ~true_pos)
    fn = np.sum(~pred_pos & true_pos)
    denom = 2 * tp + fp + fn
    return 0.0 if denom == 0 else float(100.0 * 2 * tp / denom)


def mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation from the confusion matrix (Gorodkin's multiclass form, equal to the binary formula)."""
    p, y = _check_pair(predictions, labels)
    classes, inverse = np.unique(np.concatenate([y, p]), return_inverse=True)
    k = classes.size
    y_idx, p_idx = inverse[: y.size], inverse[y.size :]
    confusion = np.zeros((k, k), dtype=np.float64)  # (true, predicted)
    np.add.at(confusion, (y_idx, p_idx), 1.0)
    t = confusion.sum(axis=1)  # (K,) how often each class is true
    q = confusion.sum(axis=0)  # (K,) how often each class is predicted
    correct, total = np.trace(confusion), confusion.sum()
    cov_pred_true = correct * total - t @ q
    cov_pred = total * total - q @ q
    cov_true = total * total - t @ t
    if cov_pred == 0 or cov_true == 0:
        return 0.0
    return float(100.0 * cov_pred_true / np.sqrt(cov_pred * cov_true))


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x = x.astype(np.float64) - x.mean(dtype=np.float64)
    y = y.astype(np.float64) - y.mean(dtype=np.float64)
    ss = np.sqrt((x @ x) * (y @ y))
    if ss == 0:
        return 0.0
    return float(np.clip((x @ y) / ss, -1.0, 1.0))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    p, y = _check_pair(predictions, labels)
    return 100.0 * _correlation(p, y)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span (like scipy.stats.rankdata)."""
    values = np.asarray(values).reshape(-1)
    n = values.size
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]  # (N,)
    group = np.cumsum(starts_group) - 1  # (N,) group index of each sorted position
    starts = np.flatnonzero(starts_group)  # (G,)
    ends = np.r_[starts[1:], n]  # (G,) exclusive
    mean_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    p, y = _check_pair(predictions, labels)
    if np.isnan(p.astype(np.float64)).any() or np.isnan(y.astype(np.float64)).any():
        return float("nan")  # ranks would hide a NaN; let it show
    return 100.0 * _correlation(average_ranks(p), average_ranks(y))


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[np.ndarray, np.ndarray], float]
    kind: str  # "classification" | "binary" | "regression"


# The one registry of metrics: adding a metric is one entry here plus its test.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("accuracy", accuracy, "classification"),
        Metric("f1", f1, "binary"),
        Metric("mcc", mcc, "classification"),
        Metric("pearson", pearson, "regression"),
        Metric("spearman", spearman, "regression"),
    )
}


def check_metric_fits(name: str, is_regression: bool, num_labels: int) -> str | None:
    """Why metric `name` cannot score such a task, or None when it can."""
    if name not in METRICS:
        return f"unknown metric {name!r} (valid: {', '.join(METRICS)})"
    kind = METRICS[name].kind
    if is_regression and kind != "regression":
        return f"metric {name!r} needs class labels, but the task is a regression"
    if not is_regression and kind == "regression":
        return f"metric {name!r} is for regression tasks, but the task has class labels"
    if kind == "binary" and num_labels != 2:
        return f"metric {name!r} needs exactly 2 labels, the task has {num_labels}"
    return None


def compute_metrics(task: ScoredTask, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric of `task`, in the task's order, in percent points."""
    if task.is_regression:
        predictions = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64)
    return {name: METRICS[name].fn(predictions, labels) for name in task.metrics}


def predictions_from_outputs(task: ScoredTask, logits: np.ndarray) -> np.ndarray:
    """Model outputs -> predictions: argmax over classes (int64, (B,)), or the single score for regression ((B,))."""
    logits = np.asarray(logits)
    if task.is_regression:
        if logits.ndim == 2 and logits.shape[1] == 1:
            return logits[:, 0]
        if logits.ndim == 1:
            return logits
        raise ValueError(f"{task.name}: regression outputs must be (B,) or (B, 1), got {logits.shape}")
    if logits.ndim != 2 or logits.shape[1] != task.num_labels:
        raise ValueError(f"{task.name}: expected logits of shape (B, {task.num_labels}), got {logits.shape}")
    return np.argmax(logits, axis=-1).astype(np.int64)
