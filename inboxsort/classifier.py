"""A loaded model plus what it needs to be served: its classes, input size and version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One image's predicted label and the probability of that label."""

    label: str
    score: float


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Model outputs (one logit, or softmax rows) → class probabilities of shape (n, classes)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-np.clip(outputs[:, 0], -60, 60)))
        return np.stack([1.0 - positive, positive], axis=1)
    return outputs


@dataclass(frozen=True)
class Classifier:
    """A Keras model ready for predict_on_batch on raw uint8 pixels."""

    model: Any
    classes: tuple[str, ...]
    image_size: int
    version: int

    def predict_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of (n, size, size, 3) uint8 pixels."""
        if len(pixels) == 0:
            return np.zeros((0, len(self.classes)))
        # predict_on_batch runs one graph call with no tf.data pipeline: for a batch that is
        # already in memory it is several times faster than model.predict.
        outputs = self.model.predict_on_batch(pixels.astype(np.float32, copy=False))
        return probabilities(np.asarray(outputs))

    def predict(self, pixels: np.ndarray) -> list[Prediction]:
        """Label and score for each image of a batch."""
        probs = self.predict_probabilities(pixels)
        best = probs.argmax(axis=1)
        return [Prediction(self.classes[i], float(probs[row, i])) for row, i in enumerate(best)]

    def labels(self, predictions: Sequence[Prediction]) -> list[int]:
        """Class indices of predictions."""
        return [self.classes.index(p.label) for p in predictions]
