"""The retrain child: `python -m inboxsort.trainer.retrain.worker JOB.json`.

Continues fine-tuning the active model with the recipe's phase 2 (compile_phase: base layers
from fine_tune_at trainable, RMSprop; BatchNorm stays in inference mode because the saved graph
calls the base with training=False), scores the model before and after on the gate set and the
held-out corrections, saves the candidate and its LiteRT flatbuffer (checked on those same
images) and writes a small JSON result. The parent decides.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.errors import InboxsortError, ModelError
from inboxsort.model.artifact import load_classifier
from inboxsort.model.classifier import Classifier
from inboxsort.model.nativelog import import_tensorflow
from inboxsort.trainer.dataset import Sample, load_arrays
from inboxsort.trainer.evaluate import Scores, evaluate_arrays
from inboxsort.trainer.fitting import history_of, peak_rss_mb, pipeline, serving_copy, versions
from inboxsort.trainer.flatbuffer import convert_or_none
from inboxsort.trainer.progress import Meter, Throttled, keras_callback
from inboxsort.trainer.recipe import compile_phase
from inboxsort.trainer.retrain.records import (
    Judged,
    LabelledPath,
    RetrainJob,
    WorkerFailure,
    WorkerResult,
)

EXIT_PARENT_GONE = 3
TICK_SECONDS = 1.0

Labelled = tuple[np.ndarray, np.ndarray]  # decoded pixels and their label indices


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Rename into place: the parent reads either nothing or the whole result.
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data))
    temp.replace(path)


def _load(rows: Sequence[LabelledPath], size: int) -> Labelled:
    samples = [Sample(Path(path), label, "") for path, label in rows]
    # Two decode threads: the machine is shared with the daemon this process yields to.
    # Unreadable files are left out; the judged sets are the same for both models.
    x, y, _ = load_arrays(samples, image_size=size, workers=2)
    return x, y


def _judge(classifier: Classifier, gate_set: Labelled, corrections: Labelled) -> Judged:
    def scored(x: np.ndarray, y: np.ndarray) -> Scores | None:
        return evaluate_arrays(classifier, x, y) if len(x) else None

    return Judged(gate_set=scored(*gate_set), corrections=scored(*corrections))


def _parent_guard(parent: int) -> Any:
    """A Keras callback that stops the process at once if the daemon died: nobody would read."""
    import keras

    # Keras calls it as on_train_batch_end(batch, logs=...): the names are part of the contract.
    def check(batch: int, logs: object = None) -> None:
        if os.getppid() != parent:
            os._exit(EXIT_PARENT_GONE)

    return keras.callbacks.LambdaCallback(on_train_batch_end=check)


def _fine_tune(
    model: Any, job: RetrainJob, train: Labelled, *, classes: int, parent: int
) -> tuple[dict[str, list[float]], float]:
    """The recipe's phase 2 on the training images; returns (history, seconds in fit)."""
    compile_phase(
        model,
        phase=2,
        learning_rate=job.learning_rate,
        fine_tune_at=job.fine_tune_at,
        label_smoothing=job.label_smoothing if classes == 2 else 0.0,
    )
    data = pipeline(*train, classes=classes, batch_size=job.batch_size, seed=job.seed, prefetch=2)
    meter = Meter(
        epochs=job.epochs,
        steps=math.ceil(len(train[0]) / job.batch_size),
        batch_size=job.batch_size,
        images=len(train[0]),
    )
    # Ticks go to the parent through this process's output, at most one a second.
    report = Throttled(lambda tick: print(tick.to_line(), flush=True), every=TICK_SECONDS)
    start = time.monotonic()
    callbacks = [_parent_guard(parent), keras_callback(meter, report)]
    fit = model.fit(data, epochs=job.epochs, verbose=0, callbacks=callbacks)
    return history_of(fit), time.monotonic() - start


def run(job: RetrainJob) -> WorkerResult:
    """Fine-tune once as the job says; returns the result for the parent."""
    import_tensorflow()  # its start-up notices would crowd out the log tail a failure shows
    import keras

    started = time.monotonic()
    parent = os.getppid()
    keras.utils.set_random_seed(job.seed)
    # Keras whatever serves: a LiteRT flatbuffer cannot be trained.
    active = load_classifier(job.model_dir, version=job.version, runtime="keras")
    if active.classes != job.classes:
        raise ModelError(f"the active model's classes {list(active.classes)} changed meanwhile")
    size = active.image_size
    train = _load(job.train, size)
    gate_set = _load(job.gate, size)
    corrections = _load(job.held_out, size)
    if not len(train[0]):
        raise ModelError("none of the training images could be read")
    load_seconds = time.monotonic() - started

    before = _judge(active, gate_set, corrections)
    model = active.model
    history, fit_seconds = _fine_tune(model, job, train, classes=len(active.classes), parent=parent)
    served = serving_copy(model)
    candidate = Classifier(served, active.classes, size, version=-1)
    after = _judge(candidate, gate_set, corrections)
    served.save(str(job.out_model))
    litert, litert_error = _flatbuffer(served, job, gate_set, corrections, train)
    return WorkerResult(
        active=before,
        candidate=after,
        history=history,
        seconds={
            "load": round(load_seconds, 1),
            "fit": round(fit_seconds, 1),
            "total": round(time.monotonic() - started, 1),
        },
        peak_rss_mb=round(peak_rss_mb(), 1),
        versions=versions(),
        litert=litert,
        litert_error=litert_error,
    )


def _flatbuffer(
    served: Any, job: RetrainJob, gate_set: Labelled, corrections: Labelled, train: Labelled
) -> tuple[dict[str, Any] | None, str]:
    """Convert the candidate, checked on the images that judge it; write job.out_litert.

    Returns its card entry, or (None, why) when the conversion failed: the candidate is still
    registered, and serves with Keras.
    """
    probe = np.concatenate([gate_set[0], corrections[0]])
    name = f"the {len(gate_set[0])} gate-set images and {len(corrections[0])} held-out corrections"
    if not len(probe):  # nothing judges it: agreement on the images it learnt from, then
        probe, name = train[0], f"the {len(train[0])} training images"
    flatbuffer, why = convert_or_none(served, probe, name)
    if flatbuffer is None:
        return None, why
    job.out_litert.write_bytes(flatbuffer.content)
    return flatbuffer.card_entry(), ""


def main(argv: list[str]) -> int:
    """Read the job, lower priority, train, write the result; exit 1 with a reason on failure."""
    if len(argv) != 1:
        print("usage: python -m inboxsort.trainer.retrain.worker JOB.json", file=sys.stderr)
        return 2
    job = RetrainJob.from_json(json.loads(Path(argv[0]).read_text()))
    try:
        if job.nice:
            os.nice(job.nice)  # first, before TensorFlow spins up its thread pools
        result = run(job)
    except Exception as exc:  # any failure becomes a reason the parent can show
        traceback.print_exc()
        reason = str(exc) if isinstance(exc, InboxsortError) else f"{type(exc).__name__}: {exc}"
        _write_json(job.result, WorkerFailure(reason).to_json())
        return 1
    _write_json(job.result, result.to_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
