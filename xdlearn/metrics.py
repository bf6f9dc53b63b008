"""Scores of one set of predictions: plain functions of logits or probabilities and labels.

They run no model and import no other xdlearn module, so ``train`` (its per-epoch scores) and ``evaluate``
(scores across domains, transfer matrices) share them without either importing the other. Lessons reach
them as ``evaluate.accuracy``, ``evaluate.softmax`` and so on.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

CALIBRATION_BINS = 10   # equal-width confidence bins of the expected calibration error


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities from logits, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """Fraction predicted right."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    return float((labels == predictions).mean()) if len(labels) else float("nan")


def confusion_matrix(labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def macro_f1(labels: Sequence[int], predictions: Sequence[int], num_classes: int | None = None) -> float:
    """Mean F1 over classes: a majority-class guesser scores low even when classes are imbalanced."""
    num_classes = num_classes or int(max(max(labels), max(predictions)) + 1)
    m = confusion_matrix(labels, predictions, num_classes)
    tp = np.diag(m).astype(float)
    precision = np.divide(tp, m.sum(0), out=np.zeros_like(tp), where=m.sum(0) > 0)
    recall = np.divide(tp, m.sum(1), out=np.zeros_like(tp), where=m.sum(1) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def expected_calibration_error(probs: np.ndarray, labels: Sequence[int], n_bins: int = CALIBRATION_BINS) -> float:
    r"""ECE: :math:`\sum_b \frac{|B_b|}{N}\,|\mathrm{acc}(B_b) - \mathrm{conf}(B_b)|` over confidence bins."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, predicted = probs.max(-1), probs.argmax(-1)
    correct = (predicted == labels).astype(float)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def metrics_from_logits(logits: np.ndarray, labels: Sequence[int]) -> dict:
    """Accuracy, macro-F1, ECE and the confusion matrix of one set of predictions."""
    probs = softmax(logits)
    predictions = probs.argmax(-1)
    k = probs.shape[-1]
    return {"accuracy": accuracy(labels, predictions), "macro_f1": macro_f1(labels, predictions, k),
            "ece": expected_calibration_error(probs, labels), "n": int(len(labels)),
            "confusion": confusion_matrix(labels, predictions, k).tolist()}
