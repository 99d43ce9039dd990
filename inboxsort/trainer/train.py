"""`inboxsort train`: run the two-phase recipe on a data folder and produce a model + card."""

from __future__ import annotations

import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.classifier import Classifier
from inboxsort.errors import ModelError
from inboxsort.trainer.artifact import CARD_FORMAT
from inboxsort.trainer.dataset import Splits, discover, load_arrays
from inboxsort.trainer.evaluate import evaluate_arrays
from inboxsort.trainer.recipe import BACKBONE, build_model, compile_phase, keras_cache, weights_file


@dataclass(frozen=True)
class TrainOptions:
    """The recipe's knobs (defaults: the tutorial's, at 224 px)."""

    image_size: int = 224
    batch_size: int = 32
    epochs: int = 10
    fine_tune_epochs: int = 10
    fine_tune_at: int = 100
    learning_rate: float = 1e-4
    fine_tune_learning_rate: float = 1e-5
    label_smoothing: float = 0.0
    seed: int = 1337
    verbose: int = 1


@dataclass(frozen=True)
class TrainResult:
    """A trained serving model and its card."""

    model: Any
    card: dict[str, Any]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _serving_copy(model: Any) -> Any:
    """The same layers and weights without optimizer state: a smaller file, nothing to resume."""
    import keras

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def _history(fit: Any) -> dict[str, list[float]]:
    return {k: [round(float(v), 5) for v in vals] for k, vals in fit.history.items()}


def _targets(y: np.ndarray, classes: int) -> np.ndarray:
    return y.astype(np.float32) if classes == 2 else y


def train(data: Path, options: TrainOptions) -> TrainResult:
    """Train on DIR with the two-phase recipe; returns the serving model and its card."""
    splits = discover(data)
    return train_on(splits, options, data_source=str(data))


def train_on(splits: Splits, options: TrainOptions, *, data_source: str) -> TrainResult:
    """Train on already discovered splits."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(options.seed)
    started = time.monotonic()
    size = options.image_size
    x_train, y_train, skipped = load_arrays(splits.train, image_size=size)
    x_val, y_val, skipped_val = load_arrays(splits.validation, image_size=size)
    x_test, y_test, skipped_test = load_arrays(splits.test, image_size=size)
    load_seconds = time.monotonic() - started
    if len(x_train) == 0:
        raise ModelError("no readable training images")
    classes = len(splits.classes)
    model = build_model(image_size=size, num_classes=classes)

    # Decoded uint8 arrays stay in memory (2000 images at 224 px are 300 MB), so each epoch
    # re-reads nothing from disk; tf.data only shuffles, batches and prefetches.
    def pipeline(x: np.ndarray, y: np.ndarray, *, shuffle: bool) -> Any:
        ds = tf.data.Dataset.from_tensor_slices((x, _targets(y, classes)))
        if shuffle:
            ds = ds.shuffle(len(x), seed=options.seed, reshuffle_each_iteration=True)
        ds = ds.batch(options.batch_size).map(
            lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE
        )
        return ds.prefetch(tf.data.AUTOTUNE)

    train_ds = pipeline(x_train, y_train, shuffle=True)
    val_ds = pipeline(x_val, y_val, shuffle=False) if len(x_val) else None
    smoothing = options.label_smoothing if classes == 2 else 0.0

    compile_phase(model, phase=1, learning_rate=options.learning_rate, label_smoothing=smoothing)
    phase1_start = time.monotonic()
    history: dict[str, list[float]] = {}
    if options.epochs:
        fit = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=options.epochs,
            shuffle=False,
            verbose=options.verbose,
        )
        history = _history(fit)
    phase1_seconds = time.monotonic() - phase1_start

    phase2_start = time.monotonic()
    if options.fine_tune_epochs:
        compile_phase(
            model,
            phase=2,
            learning_rate=options.fine_tune_learning_rate,
            fine_tune_at=options.fine_tune_at,
            label_smoothing=smoothing,
        )
        fit = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=options.epochs + options.fine_tune_epochs,
            initial_epoch=options.epochs,
            shuffle=False,
            verbose=options.verbose,
        )
        for key, values in _history(fit).items():
            history.setdefault(key, []).extend(values)
    phase2_seconds = time.monotonic() - phase2_start

    served = _serving_copy(model)
    classifier = Classifier(served, splits.classes, size, version=-1)
    metrics = {
        "validation": evaluate_arrays(classifier, x_val, y_val) if len(x_val) else None,
        "test": evaluate_arrays(classifier, x_test, y_test) if len(x_test) else None,
        "train_n": len(x_train),
    }
    card = {
        "format": CARD_FORMAT,
        "classes": list(splits.classes),
        "image_size": size,
        "output": "logit" if classes == 2 else "softmax",
        "data": {
            "source": data_source,
            "fingerprint": splits.fingerprint(),
            "train": len(splits.train),
            "validation": len(splits.validation),
            "test": len(splits.test),
            "skipped": [f"{p}: {why}" for p, why in skipped + skipped_val + skipped_test],
        },
        "recipe": {k: v for k, v in asdict(options).items() if k != "verbose"},
        "metrics": metrics,
        "history": history,
        "wall_seconds": {
            "load": round(load_seconds, 1),
            "phase1": round(phase1_seconds, 1),
            "phase2": round(phase2_seconds, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "backbone": {
            "name": BACKBONE,
            "weights": "imagenet",
            "file": str(keras_cache() / weights_file(size)),
        },
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
    }
    return TrainResult(model=served, card=card)


def summary_table(card: dict[str, Any]) -> str:
    """A short human summary of a card: the figures people look at first."""
    rows = []
    for split in ("validation", "test"):
        m = (card.get("metrics") or {}).get(split)
        if m:
            rows.append(
                f"  {split:<11} accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  n {m['n']}"
            )
    wall = card.get("wall_seconds", {})
    rows.append(
        f"  wall time   {wall.get('total', 0):.0f} s (load {wall.get('load', 0):.0f} s, "
        f"phase 1 {wall.get('phase1', 0):.0f} s, phase 2 {wall.get('phase2', 0):.0f} s)"
    )
    rows.append(f"  peak memory {card.get('peak_rss_mb', 0):.0f} MB")
    return "\n".join(rows)
