"""A model on disk: model.keras plus card.json in one folder, written atomically; no pickles."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from inboxsort.errors import ModelError
from inboxsort.files import fsync_dir
from inboxsort.model.classifier import Classifier
from inboxsort.model.litert import LITERT_FILE, LiteRTNetwork, refusal
from inboxsort.model.nativelog import import_tensorflow

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
CARD_FORMAT = 1
BUILTIN = 0  # the version number of the model shipped inside the package
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_model"


class SavesItself(Protocol):
    """A model that writes its own .keras file: a keras.Model, or a file already saved."""

    def save(self, filepath: Path, /) -> None:
        """Write the model to `filepath`."""


def write_version_folder(
    model: SavesItself, card: dict[str, Any], dest: Path, *, litert: bytes | None = None
) -> Path:
    """Save model, card (and a LiteRT flatbuffer) into a temp folder, fsync, rename into place."""
    if dest.exists():
        raise ModelError(f"model folder {dest} already exists; versions are never overwritten")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        model.save(temp / MODEL_FILE)
        (temp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        names = [MODEL_FILE, CARD_FILE]
        if litert is not None:
            (temp / LITERT_FILE).write_bytes(litert)
            names.append(LITERT_FILE)
        for name in names:
            with open(temp / name, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(temp)
        # A reader sees either no folder or a complete one: rename is atomic on one filesystem.
        temp.rename(dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return dest


def read_card(folder: Path) -> dict[str, Any]:
    """The card.json of a model folder, checked for the keys serving needs."""
    try:
        card = json.loads((folder / CARD_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model card {folder / CARD_FILE} is unreadable: {exc}") from None
    for key in ("classes", "image_size"):
        if key not in card:
            raise ModelError(f"model card {folder / CARD_FILE} lacks {key!r}")
    return dict(card)


def load_classifier(
    folder: Path, *, version: int, runtime: str = "auto", workers: int = 1, threads: int = 0
) -> Classifier:
    """Load a model folder for serving: its LiteRT flatbuffer where it may, else Keras.

    `runtime` is serving.runtime: "auto" and "litert" serve the flatbuffer when its card says
    it passed the agreement gate and its SHA-256 still matches; otherwise the version serves
    with Keras and the log says why. `workers` is how many threads will call it at once;
    `threads` (0: this process's cores shared among the workers) is LiteRT's per worker.
    """
    card = read_card(folder)
    size, classes = int(card["image_size"]), tuple(card["classes"])
    why = refusal(folder, card, runtime)
    if why is None:
        cores = len(os.sched_getaffinity(0))
        threads = threads or max(1, cores // max(1, workers))
        network = LiteRTNetwork(folder / LITERT_FILE, copies=workers, threads=threads)
        _check_shape(folder, network, _outputs(card), size, classes)
        return Classifier(network, classes, size, version, runtime="litert")
    if runtime != "keras":
        level = logging.WARNING if runtime == "litert" or "litert" in card else logging.INFO
        log.log(level, "model version %d serves with Keras: %s", version, why)
    return _load_keras(folder, version=version, size=size, classes=classes)


def _load_keras(folder: Path, *, version: int, size: int, classes: tuple[str, ...]) -> Classifier:
    """The .keras file with safe_mode on, checked against its card."""
    import_tensorflow()
    import keras

    try:
        model = keras.saving.load_model(folder / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a corrupt or hostile file
        raise ModelError(
            f"cannot load {folder / MODEL_FILE}: {type(exc).__name__}: {exc}"
        ) from None
    if tuple(model.input_shape[1:]) != (size, size, 3) or model.output_shape[-1] != (
        1 if len(classes) == 2 else len(classes)
    ):
        raise ModelError(
            f"{folder}: model shape {model.input_shape}->{model.output_shape} does not match its "
            f"card ({size}x{size}, classes {list(classes)})"
        )
    return Classifier(model=model, classes=classes, image_size=size, version=version)


def _outputs(card: dict[str, Any]) -> int:
    return 1 if len(card["classes"]) == 2 else len(card["classes"])


def _check_shape(
    folder: Path, network: LiteRTNetwork, outputs: int, size: int, classes: tuple[str, ...]
) -> None:
    shape = tuple(int(n) for n in network.input_shape)
    out = tuple(int(n) for n in network.output_shape)
    if shape != (size, size, 3) or out[-1:] != (outputs,):
        raise ModelError(
            f"{folder / LITERT_FILE}: input {shape}, output {out} does not match its card "
            f"({size}x{size}, classes {list(classes)})"
        )
