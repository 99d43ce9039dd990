"""A Keras model's LiteRT flatbuffer, and the gate that lets it serve only if it agrees.

Runs where Keras already runs (training, the retrain worker, `inboxsort models export`); the
serving process only reads what this wrote. The flatbuffer holds the inference graph alone:
the augmentation layers are training-only random ops the converter cannot take.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.files import fsync_dir
from inboxsort.model.artifact import CARD_FILE, read_card
from inboxsort.model.classifier import probabilities
from inboxsort.model.litert import AGREEMENT_BOUND, LITERT_FILE, LiteRTNetwork
from inboxsort.model.nativelog import import_tensorflow

_TRAINING_ONLY = ("augmentation",)
_PROBE_BATCH = 32


@dataclass(frozen=True)
class Agreement:
    """How the flatbuffer's outputs compare with the Keras model's on a probe set."""

    probe: str  # which images
    n: int
    labels_equal: int
    max_abs_diff: float
    bound: float = AGREEMENT_BOUND

    @property
    def agrees(self) -> bool:
        """Every label the same and every probability within the bound, on at least one image."""
        return self.n > 0 and self.labels_equal == self.n and self.max_abs_diff <= self.bound

    def describe(self) -> str:
        """One line for the log and `models list`."""
        return (
            f"{self.labels_equal}/{self.n} labels equal to Keras on {self.probe}, largest "
            f"probability difference {self.max_abs_diff:.2g} (bound {self.bound:g})"
        )

    def to_json(self) -> dict[str, Any]:
        """As the card records it."""
        return {
            "probe": self.probe,
            "n": self.n,
            "labels_equal": self.labels_equal,
            "max_abs_diff": self.max_abs_diff,
            "bound": self.bound,
        }


@dataclass(frozen=True)
class Flatbuffer:
    """A converted model: its bytes, and the card's `litert` entry for them."""

    content: bytes
    agreement: Agreement

    def card_entry(self) -> dict[str, Any]:
        """What the card records: the file, its SHA-256, the gate's figures and verdict."""
        import hashlib

        return {
            "file": LITERT_FILE,
            "sha256": hashlib.sha256(self.content).hexdigest(),
            "agreement": self.agreement.to_json(),
            "agrees": self.agreement.agrees,
        }


def serving_model(model: Any) -> Any:
    """The same trained layers without the training-only ones, as a new Keras model."""
    import_tensorflow()
    import keras

    inputs = keras.Input(shape=model.input_shape[1:], name="pixels")
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name in _TRAINING_ONLY:
            continue
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_serving")


def convert(model: Any, *, probe: np.ndarray, probe_name: str) -> Flatbuffer:
    """Convert a trained model to LiteRT and measure its agreement with Keras on `probe`."""
    with tempfile.TemporaryDirectory(prefix="inboxsort-litert-") as folder:
        path = Path(folder) / LITERT_FILE
        serving_model(model).export(str(path), format="litert", verbose=False)
        content = path.read_bytes()
        agreement = measure(model, LiteRTNetwork(path), probe=probe, probe_name=probe_name)
    return Flatbuffer(content, agreement)


def measure(
    keras_model: Any, network: LiteRTNetwork, *, probe: np.ndarray, probe_name: str
) -> Agreement:
    """Both runtimes on the same pixels: labels equal, and the largest probability difference."""
    equal, worst = 0, 0.0
    for start in range(0, len(probe), _PROBE_BATCH):
        pixels = probe[start : start + _PROBE_BATCH].astype(np.float32)
        ours = probabilities(np.asarray(keras_model.predict_on_batch(pixels)))
        theirs = probabilities(network.predict_on_batch(pixels))
        equal += int((ours.argmax(axis=1) == theirs.argmax(axis=1)).sum())
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return Agreement(probe=probe_name, n=len(probe), labels_equal=equal, max_abs_diff=worst)


def attach(folder: Path, flatbuffer: Flatbuffer) -> dict[str, Any]:
    """Add a flatbuffer to an existing version folder; returns the card as written.

    model.tflite first, then the card that names it, each under a temporary name, fsynced and
    renamed into place: a reader sees the old card (no artifact, or one whose SHA-256 no longer
    matches: Keras serves) or the new one with its file, never a half-written file. model.keras
    is not touched.
    """
    card = read_card(folder)
    card["litert"] = flatbuffer.card_entry()
    _replace(folder / LITERT_FILE, flatbuffer.content)
    _replace(folder / CARD_FILE, (json.dumps(card, indent=2, sort_keys=True) + "\n").encode())
    fsync_dir(folder)
    return card


def _replace(path: Path, content: bytes) -> None:
    """Write `content` to a temporary file beside `path`, fsync it, rename it over `path`."""
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    temp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        temp.chmod(0o644)  # mkstemp's 0600 would hide it from a daemon running as another user
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
