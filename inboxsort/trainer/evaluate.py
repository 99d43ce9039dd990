"""Score a model on labelled images: accuracy, loss, confusion matrix, per-class figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inboxsort.model.classifier import Classifier


@dataclass(frozen=True)
class ClassScores:
    """One class's figures; precision and recall are None when nothing was predicted/present."""

    precision: float | None
    recall: float | None
    support: int

    def to_json(self) -> dict[str, Any]:
        """As in a card: {"precision", "recall", "support"}."""
        return {"precision": self.precision, "recall": self.recall, "support": self.support}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ClassScores:
        """Read what to_json wrote."""
        return cls(
            precision=_float_or_none(data["precision"]),
            recall=_float_or_none(data["recall"]),
            support=int(data["support"]),
        )


@dataclass(frozen=True)
class Scores:
    """A model's figures on one set of labelled images (accuracy and loss None when n is 0)."""

    n: int
    correct: int
    accuracy: float | None
    loss: float | None
    confusion: tuple[tuple[int, ...], ...]  # rows true, columns predicted
    per_class: Mapping[str, ClassScores]

    def to_json(self) -> dict[str, Any]:
        """As cards and model_versions.metrics hold scores (the same keys in the same order)."""
        return {
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "loss": self.loss,
            "confusion": [list(row) for row in self.confusion],
            "per_class": {name: c.to_json() for name, c in self.per_class.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Scores:
        """Read what to_json wrote."""
        return cls(
            n=int(data["n"]),
            correct=int(data["correct"]),
            accuracy=_float_or_none(data["accuracy"]),
            loss=_float_or_none(data["loss"]),
            confusion=tuple(tuple(int(v) for v in row) for row in data["confusion"]),
            per_class={
                name: ClassScores.from_json(c) for name, c in dict(data["per_class"]).items()
            },
        )


def _float_or_none(value: float | None) -> float | None:
    return None if value is None else float(value)


def score(probs: np.ndarray, y: np.ndarray, classes: Sequence[str]) -> Scores:
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
        per_class[name] = ClassScores(
            precision=tp / predicted_i if predicted_i else None,
            recall=tp / actual_i if actual_i else None,
            support=actual_i,
        )
    return Scores(
        n=n,
        correct=correct,
        accuracy=correct / n if n else None,
        loss=loss,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion.tolist()),
        per_class=per_class,
    )


def evaluate_arrays(classifier: Classifier, x: np.ndarray, y: np.ndarray) -> Scores:
    """Metrics of a classifier on decoded images."""
    return score(classifier.predict_all(x), y, classifier.classes)
