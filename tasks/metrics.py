"""Finetuning metrics over all predictions of a dev file (scikit-learn / scipy, as GLUE reports them).

accuracy tasks: ``accuracy`` (= correct / total), ``correct``, ``total`` (+ ``f1`` of the positive class for MRPC
and QQP, beyond upstream); CoLA: ``mcc`` (Matthews correlation), ``accuracy``, ``total``; STS-B (regression):
``pearson``, ``spearman``, ``corr`` (their mean), ``total``. The headline metric of each task is ``HEADLINE[task]``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

HEADLINE = {"MNLI": "accuracy", "QQP": "accuracy", "QNLI": "accuracy", "SST-2": "accuracy", "CoLA": "mcc",
            "STS-B": "corr", "MRPC": "accuracy", "RTE": "accuracy", "RACE": "accuracy"}
"""The metric a task is judged (and its best epoch chosen) by."""
F1_TASKS = ("MRPC", "QQP")


def classification_metrics(task: str, predictions: Sequence[int], labels: Sequence[int]) -> dict[str, float]:
    """accuracy/correct/total, plus f1 (MRPC, QQP) or mcc (CoLA)."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    pred, gold = np.asarray(predictions, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"{task}: {pred.shape} predictions for {gold.shape} labels")
    total = int(gold.size)
    correct = int((pred == gold).sum())
    out: dict[str, float] = {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total}
    if task in F1_TASKS:
        out["f1"] = float(f1_score(gold, pred, pos_label=1, zero_division=0.0)) if total else 0.0
    if task == "CoLA":
        out["mcc"] = float(matthews_corrcoef(gold, pred)) if total else 0.0
    return out


def regression_metrics(predictions: Sequence[float], labels: Sequence[float]) -> dict[str, float]:
    """pearson, spearman, their mean ``corr``, and total (a constant prediction correlates 0, not NaN)."""
    from scipy.stats import pearsonr, spearmanr

    pred, gold = np.asarray(predictions, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if pred.shape != gold.shape or pred.ndim != 1:
        raise ValueError(f"STS-B: {pred.shape} predictions for {gold.shape} labels")
    total = int(gold.size)
    if total < 2 or float(np.std(pred)) == 0.0 or float(np.std(gold)) == 0.0:
        pearson = spearman = 0.0
    else:
        pearson, spearman = float(pearsonr(pred, gold)[0]), float(spearmanr(pred, gold)[0])
        pearson = 0.0 if math.isnan(pearson) else pearson
        spearman = 0.0 if math.isnan(spearman) else spearman
    return {"pearson": pearson, "spearman": spearman, "corr": (pearson + spearman) / 2, "total": total}


def task_metrics(task: str, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The metrics ``task`` reports for one set of predictions."""
    if task == "STS-B":
        return regression_metrics(predictions, labels)
    return classification_metrics(task, predictions, labels)
