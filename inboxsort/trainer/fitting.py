"""What training and retraining share: the tf.data pipeline, the serving copy, the records."""

from __future__ import annotations

import platform
import resource
import sys
from typing import Any

import numpy as np


def targets(y: np.ndarray, classes: int) -> np.ndarray:
    """Labels as the loss wants them: floats for one logit, integers for softmax."""
    return y.astype(np.float32) if classes == 2 else y


def pipeline(
    x: np.ndarray,
    y: np.ndarray,
    *,
    classes: int,
    batch_size: int,
    seed: int | None = None,
    prefetch: int | None = None,
) -> Any:
    """Decoded uint8 arrays in memory → shuffled (given a seed), batched float32 batches.

    Each epoch re-reads nothing from disk; tf.data only shuffles, batches and prefetches.
    `prefetch` None lets tf.data choose; a retrain beside the daemon asks for less.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, targets(y, classes)))
    if seed is not None:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(
        lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE
    )
    return ds.prefetch(tf.data.AUTOTUNE if prefetch is None else prefetch)


def serving_copy(model: Any) -> Any:
    """The same layers and weights without optimizer state: a smaller file, nothing to resume."""
    import keras

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def history_of(fit: Any) -> dict[str, list[float]]:
    """A Keras History as plain rounded numbers for a card."""
    return {k: [round(float(v), 5) for v in vals] for k, vals in fit.history.items()}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def versions() -> dict[str, str]:
    """The versions of what trained a model, for its card."""
    import keras
    import tensorflow as tf

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
    }
