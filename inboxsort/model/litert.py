"""LiteRT serving: a model's flatbuffer run by Google's LiteRT runtime (XNNPACK), no TensorFlow.

`LiteRTNetwork` has the one method the daemon needs of a network, `predict_on_batch`, with the
Keras contract (float pixels 0..255 in, the model's outputs out), so the batcher, filing and the
hot-swap do not know which runtime serves. An interpreter must be used by one thread at a time:
the network holds one per inference worker in a pool, and a call borrows one for its batch.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from pathlib import Path
from typing import Any

import numpy as np

from inboxsort.errors import ModelError
from inboxsort.files import file_sha256
from inboxsort.model.nativelog import native_notices_dropped

LITERT_FILE = "model.tflite"
# Largest difference in any class probability the agreement gate accepts; float32 rounding
# between the two runtimes stays far below it (README, Results).
AGREEMENT_BOUND = 1e-3
RUNTIMES = ("auto", "litert", "keras")
_first_load_done = threading.Event()


class LiteRTNetwork:
    """A .tflite file behind `predict_on_batch`; safe to call from `copies` threads at once.

    A batch runs as one invoke per image on an interpreter allocated for one image, unless
    `resize_batches`: then the input tensor is resized to the batch. On a small CPU, XNNPACK
    runs single images faster than batches (README, Results: make bench-runtimes).
    """

    def __init__(
        self, path: Path, *, copies: int = 1, threads: int = 1, resize_batches: bool = False
    ) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:  # the runtime is a dependency; a broken install says so
            raise ModelError(f"cannot import the LiteRT runtime (ai-edge-litert): {exc}") from None
        self.path = path
        self.threads = threads
        self.resize_batches = resize_batches
        self._free: queue.SimpleQueue[_Slot] = queue.SimpleQueue()
        # LiteRT announces its XNNPACK delegate on stderr once per process, at the first
        # allocation; only that first load needs its stderr filtered.
        first = not _first_load_done.is_set()
        try:
            with native_notices_dropped() if first else contextlib.nullcontext():
                for _ in range(max(1, copies)):
                    slot = _Slot(Interpreter(model_path=str(path), num_threads=max(1, threads)))
                    slot.resize(1)  # allocating packs the weights for XNNPACK, off the hot path
                    self._free.put(slot)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load {path} with LiteRT: {exc}") from None
        _first_load_done.set()
        self.input_shape = tuple(slot.input["shape"][1:])
        self.output_shape = tuple(slot.output["shape"][1:])

    def predict_on_batch(self, pixels: np.ndarray) -> np.ndarray:
        """The model's outputs for a batch of (n, size, size, 3) pixels."""
        pixels = np.asarray(pixels, dtype=np.float32)
        slot = self._free.get()
        try:
            if self.resize_batches or len(pixels) <= 1:
                return slot.run(pixels)
            return np.concatenate([slot.run(pixels[i : i + 1]) for i in range(len(pixels))])
        finally:
            self._free.put(slot)


class _Slot:
    """One interpreter and the batch size its tensors are allocated for."""

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]
        self.output = interpreter.get_output_details()[0]
        self.batch = 0

    def resize(self, batch: int) -> None:
        shape = [batch, *self.input["shape"][1:]]
        self.interpreter.resize_tensor_input(self.input["index"], shape, strict=False)
        self.interpreter.allocate_tensors()
        self.batch = batch

    def run(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) == 0:
            return np.zeros((0, *self.output["shape"][1:]), dtype=np.float32)
        if len(pixels) != self.batch:
            # Reallocating costs far less than a batch; a flood keeps one size anyway.
            self.resize(len(pixels))
        self.interpreter.set_tensor(self.input["index"], pixels)
        self.interpreter.invoke()
        return np.array(self.interpreter.get_tensor(self.output["index"]))


def refusal(folder: Path, card: dict[str, Any], preference: str) -> str | None:
    """Why a version may not serve with LiteRT under `preference`, or None when it may.

    It may when its card names a flatbuffer that passed the agreement gate and the file is the
    one the gate measured (its SHA-256). Reads files only: no runtime is loaded.
    """
    if preference == "keras":
        return 'serving.runtime = "keras"'
    entry = card.get("litert")
    if not isinstance(entry, dict):
        return "it has no LiteRT artifact (`inboxsort models export` makes one)"
    agreement = entry.get("agreement") or {}
    if not entry.get("agrees"):
        return (
            f"its agreement gate failed ({agreement.get('labels_equal')}/{agreement.get('n')} "
            f"labels equal to Keras, largest difference {agreement.get('max_abs_diff')})"
        )
    path = folder / str(entry.get("file", LITERT_FILE))
    try:
        digest = file_sha256(path)
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror or exc})"
    if digest != entry.get("sha256"):
        return f"{path} does not match the SHA-256 its card records"
    return None
