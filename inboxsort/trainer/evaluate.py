"""Score a model on labelled images: accuracy, loss, confusion matrix, per-class figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inboxsort.model.classifier import Classifier


def score(probs: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Metrics from probabilities and true labels."""
    n = len(y)
    predicted = probs.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    correct = int((predicted == y).sum())
    picked = probs[np.arange(n), y] if n else np.zeros(0)
    loss = float(-np.log(np.clip(picked, 1e-7, 1.0)).mean()) if n else None
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    for true, pred in zip(y, predicted, strict=True):
        confusion[true, pred] += 1
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(confusion[i, i])
        predicted_i = int(confusion[:, i].sum())
        actual_i = int(confusion[i, :].sum())
        per_class[name] = {
            "precision": tp / predicted_i if predicted_i else None,
            "recall": tp / actual_i if actual_i else None,
            "support": actual_i,
        }
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "loss": loss,
        "confusion": confusion.tolist(),
        "per_class": per_class,
    }


def evaluate_arrays(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Metrics of a classifier on decoded images."""
    return score(classifier.predict_all(x), y, classifier.classes)
