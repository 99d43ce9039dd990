"""`inboxsort train`: run the two-phase recipe on a data folder and produce a model + card."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.config import TrainConfig
from inboxsort.errors import ModelError
from inboxsort.model.artifact import CARD_FORMAT
from inboxsort.model.classifier import Classifier
from inboxsort.model.nativelog import import_tensorflow
from inboxsort.trainer.dataset import Splits, discover, load_arrays
from inboxsort.trainer.evaluate import Scores, evaluate_arrays
from inboxsort.trainer.fitting import history_of, peak_rss_mb, pipeline, serving_copy, versions
from inboxsort.trainer.flatbuffer import convert_or_none, first_nonempty
from inboxsort.trainer.progress import Meter, Sink, keras_callback
from inboxsort.trainer.recipe import BACKBONE, build_model, compile_phase, keras_cache, weights_file


@dataclass(frozen=True)
class TrainMetrics:
    """A trained model's figures on the validation and test splits (None: an empty split)."""

    validation: Scores | None
    test: Scores | None
    train_n: int  # training images decoded

    def to_json(self) -> dict[str, Any]:
        """As the card's `metrics` and the model_versions row hold them."""
        return {
            "validation": None if self.validation is None else self.validation.to_json(),
            "test": None if self.test is None else self.test.to_json(),
            "train_n": self.train_n,
        }


@dataclass(frozen=True)
class TrainResult:
    """A trained serving model, its card, and its LiteRT flatbuffer (None: see litert_error)."""

    model: Any
    card: dict[str, Any]  # with a "litert" entry when `litert` is set
    litert: bytes | None = None
    litert_error: str = ""  # why the conversion failed: the model then serves with Keras


def train(
    data: Path, options: TrainConfig, *, verbose: int = 1, progress: Sink | None = None
) -> TrainResult:
    """Train on DIR with the two-phase recipe; returns the serving model and its card.

    `options` is the [train] section, its `data` aside; `verbose` is Keras's progress output,
    `progress` gets a Tick (epoch, images/s, time left) after every batch instead.
    """
    splits = discover(data)
    return train_on(splits, options, data_source=str(data), verbose=verbose, progress=progress)


def train_on(
    splits: Splits,
    options: TrainConfig,
    *,
    data_source: str,
    verbose: int = 1,
    progress: Sink | None = None,
) -> TrainResult:
    """Train on already discovered splits."""
    import_tensorflow()
    import keras

    keras.utils.set_random_seed(options.seed)
    started = time.monotonic()
    size = options.image_size
    x_train, y_train, skipped = load_arrays(splits.train, image_size=size)
    x_val, y_val, skipped_val = load_arrays(splits.validation, image_size=size)
    x_test, y_test, skipped_test = load_arrays(splits.test, image_size=size)
    if len(x_train) == 0:
        raise ModelError("no readable training images")
    seconds = {"load": time.monotonic() - started}
    model, history = _fit_two_phases(
        options,
        len(splits.classes),
        (x_train, y_train),
        (x_val, y_val),
        seconds=seconds,
        verbose=verbose,
        progress=progress,
    )
    served = serving_copy(model)
    classifier = Classifier(served, splits.classes, size, version=-1)
    metrics = TrainMetrics(
        validation=evaluate_arrays(classifier, x_val, y_val) if len(x_val) else None,
        test=evaluate_arrays(classifier, x_test, y_test) if len(x_test) else None,
        train_n=len(x_train),
    )
    seconds["total"] = time.monotonic() - started
    skipped_all = [f"{p}: {why}" for p, why in skipped + skipped_val + skipped_test]
    card = _card(splits, options, data_source, skipped_all, metrics, history, seconds)
    # Checked on images it was not trained on where there are any.
    probe, probe_name = first_nonempty(
        (x_test, "test"), (x_val, "validation"), (x_train, "training")
    )
    flatbuffer, why = convert_or_none(served, probe, probe_name)
    if flatbuffer is None:
        return TrainResult(model=served, card=card, litert_error=why)
    card["litert"] = flatbuffer.card_entry()
    return TrainResult(model=served, card=card, litert=flatbuffer.content)


def _card(
    splits: Splits,
    options: TrainConfig,
    data_source: str,
    skipped: list[str],
    metrics: TrainMetrics,
    history: dict[str, list[float]],
    seconds: dict[str, float],
) -> dict[str, Any]:
    """The card.json of a model trained on `splits`: data, recipe, figures, provenance."""
    size = options.image_size
    return {
        "format": CARD_FORMAT,
        "classes": list(splits.classes),
        "image_size": size,
        "output": "logit" if len(splits.classes) == 2 else "softmax",
        "data": {
            "source": data_source,
            "fingerprint": splits.fingerprint(),
            "train": len(splits.train),
            "validation": len(splits.validation),
            "test": len(splits.test),
            "skipped": skipped,
        },
        # The data folder is the card's data.source; the rest is the recipe.
        "recipe": {k: v for k, v in asdict(options).items() if k != "data"},
        "metrics": metrics.to_json(),
        "history": history,
        "wall_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "backbone": {
            "name": BACKBONE,
            "weights": "imagenet",
            "file": str(keras_cache() / weights_file(size)),
        },
        "versions": versions(),
    }


def _fit_two_phases(
    options: TrainConfig,
    classes: int,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    *,
    seconds: dict[str, float],
    verbose: int,
    progress: Sink | None,
) -> tuple[Any, dict[str, list[float]]]:
    """Phase 1 on a frozen base, phase 2 fine-tuned from fine_tune_at; times go in `seconds`."""
    model = build_model(image_size=options.image_size, num_classes=classes)
    train_ds = pipeline(*train, classes=classes, batch_size=options.batch_size, seed=options.seed)
    val_ds = (
        pipeline(*validation, classes=classes, batch_size=options.batch_size)
        if len(validation[0])
        else None
    )
    smoothing = options.label_smoothing if classes == 2 else 0.0
    fit_args: dict[str, Any] = {"validation_data": val_ds, "shuffle": False, "verbose": verbose}
    if progress is not None:
        meter = Meter(
            epochs=options.epochs + options.fine_tune_epochs,
            steps=math.ceil(len(train[0]) / options.batch_size),
            batch_size=options.batch_size,
            images=len(train[0]),
        )
        fit_args.update(verbose=0, callbacks=[keras_callback(meter, progress)])
    compile_phase(model, phase=1, learning_rate=options.learning_rate, label_smoothing=smoothing)
    start = time.monotonic()
    history: dict[str, list[float]] = {}
    if options.epochs:
        history = history_of(model.fit(train_ds, epochs=options.epochs, **fit_args))
    seconds["phase1"] = time.monotonic() - start
    start = time.monotonic()
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
            epochs=options.epochs + options.fine_tune_epochs,
            initial_epoch=options.epochs,
            **fit_args,
        )
        for key, values in history_of(fit).items():
            history.setdefault(key, []).extend(values)
    seconds["phase2"] = time.monotonic() - start
    return model, history


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
    litert = card.get("litert")
    if isinstance(litert, dict):
        gate = litert.get("agreement") or {}
        verdict = "serves with LiteRT" if litert.get("agrees") else "gate failed: serves with Keras"
        rows.append(
            f"  litert      {gate.get('labels_equal')}/{gate.get('n')} labels equal to Keras, "
            f"largest difference {float(gate.get('max_abs_diff', 0)):.2g} ({verdict})"
        )
    return "\n".join(rows)
