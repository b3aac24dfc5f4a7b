"""debx.metrics against independent implementations (scikit-learn, scipy: test-only dependencies)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from debx import metrics
from debx.tasks import TASKS

SEEDS = range(5)


def _binary(seed: int, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    flip = rng.random(n) < 0.3
    return np.where(flip, 1 - labels, labels), labels


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_f1_mcc_match_sklearn_on_random_binary(seed):
    pred, y = _binary(seed)
    assert metrics.accuracy(pred, y) == pytest.approx(100 * skm.accuracy_score(y, pred), abs=1e-9)
    assert metrics.f1(pred, y) == pytest.approx(100 * skm.f1_score(y, pred), abs=1e-9)
    assert metrics.mcc(pred, y) == pytest.approx(100 * skm.matthews_corrcoef(y, pred), abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_mcc_and_accuracy_match_sklearn_on_multiclass(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.5, y, rng.integers(0, 3, 300))
    assert metrics.mcc(pred, y) == pytest.approx(100 * skm.matthews_corrcoef(y, pred), abs=1e-9)
    assert metrics.accuracy(pred, y) == pytest.approx(100 * skm.accuracy_score(y, pred), abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_pearson_spearman_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 150).astype(np.float64)  # many ties, like STS-B's 0-5 scores
    pred = y + rng.normal(0, 1.5, 150)
    pred[:40] = np.round(pred[:40])  # ties in the predictions too
    assert metrics.pearson(pred, y) == pytest.approx(100 * stats.pearsonr(pred, y)[0], abs=1e-9)
    assert metrics.spearman(pred, y) == pytest.approx(100 * stats.spearmanr(pred, y)[0], abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
def test_average_ranks_match_scipy_rankdata(seed):
    values = np.random.default_rng(seed).integers(0, 7, 50)
    np.testing.assert_allclose(metrics.average_ranks(values), stats.rankdata(values, method="average"))


def test_metrics_are_percent_points():
    y = np.array([0, 1, 1, 0])
    assert metrics.accuracy(np.array([0, 1, 0, 0]), y) == pytest.approx(75.0)
    assert metrics.mcc(y, y) == pytest.approx(100.0)
    assert metrics.mcc(1 - y, y) == pytest.approx(-100.0)
    assert metrics.pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(100.0)
    assert metrics.spearman(np.array([1.0, 2, 3]), np.array([9.0, 4, 1])) == pytest.approx(-100.0)


@pytest.mark.parametrize("constant", [0, 1])
def test_constant_predictions_give_zero_not_nan(constant):
    pred, y = np.full(20, constant), np.array([0, 1] * 10)
    assert metrics.mcc(pred, y) == 0.0 == skm.matthews_corrcoef(y, pred)
    assert metrics.mcc(y, pred) == 0.0  # constant labels
    assert metrics.pearson(pred.astype(float), y) == 0.0
    assert metrics.spearman(pred.astype(float), y) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(stats.pearsonr(pred.astype(float), y)[0])  # the NaN we refuse to return


def test_f1_without_any_positive_is_zero_like_sklearn():
    zeros = np.zeros(10, dtype=int)
    assert metrics.f1(zeros, zeros) == 0.0 == skm.f1_score(zeros, zeros, zero_division=0)
    assert metrics.accuracy(zeros, zeros) == 100.0


def test_f1_counts_class_one_only():
    y = np.array([1, 1, 0, 0, 0])
    pred = np.array([1, 0, 1, 0, 0])  # tp 1, fp 1, fn 1
    assert metrics.f1(pred, y) == pytest.approx(50.0)
    assert metrics.f1(pred, y) == pytest.approx(100 * skm.f1_score(y, pred, pos_label=1))


def test_single_example_and_nan_predictions():
    assert metrics.accuracy(np.array([1]), np.array([1])) == 100.0
    assert metrics.pearson(np.array([2.0]), np.array([3.0])) == 0.0  # no variance
    nan_pred = np.array([1.0, np.nan, 3.0])
    assert np.isnan(metrics.pearson(nan_pred, np.array([1.0, 2, 3])))
    assert np.isnan(metrics.spearman(nan_pred, np.array([1.0, 2, 3])))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.accuracy(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="zero examples"):
        metrics.mcc(np.array([]), np.array([]))


@pytest.mark.parametrize("name", sorted(TASKS))
def test_compute_metrics_returns_every_task_metric(name):
    task = TASKS[name]
    rng = np.random.default_rng(0)
    if task.is_regression:
        y = rng.uniform(0, 5, 64)
        logits = (y + rng.normal(0, 1, 64))[:, None]  # (B, 1)
    else:
        y = rng.integers(0, task.num_labels, 64)
        logits = rng.normal(size=(64, task.num_labels))
        logits[np.arange(64), y] += 1.0
    pred = metrics.predictions_from_outputs(task, logits)
    assert pred.shape == (64,)
    result = metrics.compute_metrics(task, pred, y)
    assert list(result) == list(task.metrics)
    assert task.primary_metric in result
    assert all(isinstance(v, float) and -100.0 <= v <= 100.0 for v in result.values())
    if "accuracy" in result:
        assert result["accuracy"] == pytest.approx(100 * skm.accuracy_score(y, pred))
    if "f1" in result:
        assert result["f1"] == pytest.approx(100 * skm.f1_score(y, pred))
    if "mcc" in result:
        assert result["mcc"] == pytest.approx(100 * skm.matthews_corrcoef(y, pred))
    if "pearson" in result:
        assert result["pearson"] == pytest.approx(100 * stats.pearsonr(pred, y)[0])
        assert result["spearman"] == pytest.approx(100 * stats.spearmanr(pred, y)[0])


def test_predictions_from_outputs():
    sst2, stsb = TASKS["sst2"], TASKS["stsb"]
    np.testing.assert_array_equal(
        metrics.predictions_from_outputs(sst2, np.array([[0.1, 0.9], [2.0, -1.0]])), [1, 0]
    )
    np.testing.assert_allclose(metrics.predictions_from_outputs(stsb, np.array([[1.5], [4.0]])), [1.5, 4.0])
    np.testing.assert_allclose(metrics.predictions_from_outputs(stsb, np.array([1.5, 4.0])), [1.5, 4.0])
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        metrics.predictions_from_outputs(sst2, np.zeros((4, 3)))
    with pytest.raises(ValueError, match="regression"):
        metrics.predictions_from_outputs(stsb, np.zeros((4, 2)))


def test_check_metric_fits():
    assert metrics.check_metric_fits("accuracy", False, 3) is None
    assert "unknown metric" in metrics.check_metric_fits("bleu", False, 2)
    assert "regression" in metrics.check_metric_fits("accuracy", True, 1)
    assert "exactly 2 labels" in metrics.check_metric_fits("f1", False, 3)
    assert "regression" in metrics.check_metric_fits("pearson", False, 2)
