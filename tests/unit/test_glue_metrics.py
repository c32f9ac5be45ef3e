"""tasks.metrics against hand-computed values and scikit-learn / scipy."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.metrics import HEADLINE, classification_metrics, regression_metrics, task_metrics


def test_accuracy_counts():
    m = classification_metrics("RTE", [1, 0, 1, 1], [1, 1, 1, 0])
    assert m == {"accuracy": 0.5, "correct": 2, "total": 4}


def test_f1_for_mrpc_and_qqp_only():
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3
    for task in ("MRPC", "QQP"):
        m = classification_metrics(task, [1, 1, 1, 0, 0], [1, 1, 0, 1, 0])
        assert m["f1"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(3 / 5)
    assert "f1" not in classification_metrics("SST-2", [1, 0], [1, 0])


def test_cola_matthews_correlation_by_hand():
    pred, gold = [1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    m = classification_metrics("CoLA", pred, gold)
    assert m["mcc"] == pytest.approx(expected) and m["total"] == 6


def test_stsb_pearson_spearman_against_scipy():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 50)
    pred = gold + rng.normal(0, 1, 50)
    m = regression_metrics(pred, gold)
    assert m["pearson"] == pytest.approx(pearsonr(pred, gold)[0])
    assert m["spearman"] == pytest.approx(spearmanr(pred, gold)[0])
    assert m["corr"] == pytest.approx((m["pearson"] + m["spearman"]) / 2) and m["total"] == 50
    assert task_metrics("STS-B", [1.0, 2.0, 3.0], [3.0, 2.0, 1.0])["pearson"] == pytest.approx(-1.0)


def test_constant_predictions_correlate_zero_not_nan():
    m = regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert m["pearson"] == m["spearman"] == m["corr"] == 0.0


def test_shape_mismatch_is_an_error_and_headlines():
    with pytest.raises(ValueError, match="3 predictions|\\(3,\\) predictions"):
        classification_metrics("RTE", [1, 0, 1], [1, 0])
    assert HEADLINE["CoLA"] == "mcc" and HEADLINE["STS-B"] == "corr" and HEADLINE["MNLI"] == "accuracy"
