"""A loaded model plus what it needs to be served: its classes, input size and version."""

from __future__ import annotations

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
    """A network ready for predict_on_batch on raw pixels: a Keras model or a LiteRT one."""

    model: Any  # anything with predict_on_batch: keras.Model, or model.litert.LiteRTNetwork
    classes: tuple[str, ...]
    image_size: int
    version: int
    runtime: str = "keras"

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
        return self.to_predictions(self.predict_probabilities(pixels))

    def to_predictions(self, probs: np.ndarray) -> list[Prediction]:
        """Each row of class probabilities as its most likely label and that label's score."""
        best = probs.argmax(axis=1)
        return [Prediction(self.classes[i], float(probs[row, i])) for row, i in enumerate(best)]

    def predict_all(self, pixels: np.ndarray, *, batch: int = 32) -> np.ndarray:
        """Probabilities for every row of `pixels`, in batches of `batch` (as the daemon serves)."""
        parts = [
            self.predict_probabilities(pixels[i : i + batch]) for i in range(0, len(pixels), batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(self.classes)))


def warm_up(classifier: Classifier, *, max_batch: int) -> None:
    """Run the model once at batch 1 and at the full batch size before it serves."""
    size = classifier.image_size
    # Two batch sizes make TensorFlow trace a graph with a free batch dimension, so later
    # batches of any size do not pay for a retrace while images wait.
    for n in (1, max_batch):
        classifier.predict(np.zeros((n, size, size, 3), dtype=np.uint8))
