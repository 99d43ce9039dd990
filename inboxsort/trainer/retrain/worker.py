"""The retrain child: `python -m inboxsort.trainer.retrain.worker JOB.json`.

Continues fine-tuning the active model with the recipe's phase 2 (compile_phase: base layers
from fine_tune_at trainable, RMSprop; BatchNorm stays in inference mode because the saved graph
calls the base with training=False), scores the model before and after on the gate set and the
held-out corrections, saves the candidate and writes a small JSON result. The parent decides.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.errors import InboxsortError, ModelError
from inboxsort.model.artifact import load_classifier
from inboxsort.model.classifier import Classifier
from inboxsort.trainer.dataset import Sample, load_arrays
from inboxsort.trainer.evaluate import evaluate_arrays
from inboxsort.trainer.fitting import history_of, peak_rss_mb, pipeline, serving_copy, versions
from inboxsort.trainer.recipe import compile_phase

EXIT_PARENT_GONE = 3


def _write_json(path: Path, data: dict[str, Any]) -> None:
    # Rename into place: the parent reads either nothing or the whole result.
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(data))
    temp.replace(path)


def _load(rows: list[list[Any]], size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    samples = [Sample(Path(path), int(label), "") for path, label in rows]
    # Two decode threads: the machine is shared with the daemon this process yields to.
    x, y, skipped = load_arrays(samples, image_size=size, workers=2)
    return x, y, [f"{p}: {why}" for p, why in skipped]


def _scores(classifier: Classifier, sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> Any:
    return {
        name: evaluate_arrays(classifier, x, y) if len(x) else None for name, (x, y) in sets.items()
    }


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune once as the job says; returns the JSON-ready result."""
    import keras

    started = time.monotonic()
    parent = os.getppid()
    keras.utils.set_random_seed(int(job["seed"]))
    active = load_classifier(Path(job["model_dir"]), version=int(job["version"]))
    if list(active.classes) != list(job["classes"]):
        raise ModelError(f"the active model's classes {list(active.classes)} changed meanwhile")
    size = active.image_size
    x_train, y_train, skipped = _load(job["train"], size)
    x_gate, y_gate, skipped_gate = _load(job["gate"], size)
    x_held, y_held, skipped_held = _load(job["held_out"], size)
    if not len(x_train):
        raise ModelError("none of the training images could be read")
    judged = {"set": (x_gate, y_gate), "corrections": (x_held, y_held)}
    load_seconds = time.monotonic() - started

    before = _scores(active, judged)
    classes = len(active.classes)
    model = active.model
    compile_phase(
        model,
        phase=2,
        learning_rate=float(job["learning_rate"]),
        fine_tune_at=int(job["fine_tune_at"]),
        label_smoothing=float(job["label_smoothing"]) if classes == 2 else 0.0,
    )
    data = pipeline(
        x_train,
        y_train,
        classes=classes,
        batch_size=int(job["batch_size"]),
        seed=int(job["seed"]),
        prefetch=2,
    )

    class ParentGuard(keras.callbacks.Callback):
        """Stop at once if the daemon died: nobody would read the result."""

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if os.getppid() != parent:
                os._exit(EXIT_PARENT_GONE)

    fit_start = time.monotonic()
    fit = model.fit(data, epochs=int(job["epochs"]), verbose=0, callbacks=[ParentGuard()])
    fit_seconds = time.monotonic() - fit_start

    served = serving_copy(model)
    candidate = Classifier(served, active.classes, size, version=-1)
    after = _scores(candidate, judged)
    served.save(job["out_model"])
    return {
        "active": before,
        "candidate": after,
        "history": history_of(fit),
        "train_n": len(x_train),
        "skipped": skipped + skipped_gate + skipped_held,
        "seconds": {
            "load": round(load_seconds, 1),
            "fit": round(fit_seconds, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "versions": versions(),
    }


def main(argv: list[str]) -> int:
    """Read the job, lower priority, train, write the result; exit 1 with a reason on failure."""
    if len(argv) != 1:
        print("usage: python -m inboxsort.trainer.retrain.worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    result_path = Path(job["result"])
    try:
        if int(job.get("nice", 0)):
            os.nice(int(job["nice"]))  # first, before TensorFlow spins up its thread pools
        result = run(job)
    except Exception as exc:  # any failure becomes a reason the parent can show
        traceback.print_exc()
        reason = str(exc) if isinstance(exc, InboxsortError) else f"{type(exc).__name__}: {exc}"
        _write_json(result_path, {"ok": False, "error": reason})
        return 1
    _write_json(result_path, {"ok": True, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
