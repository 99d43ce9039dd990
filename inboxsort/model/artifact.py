"""A model on disk: model.keras plus card.json in one folder, written atomically; no pickles."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from inboxsort.errors import ModelError
from inboxsort.files import fsync_dir
from inboxsort.model.classifier import Classifier

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
CARD_FORMAT = 1
BUILTIN = 0  # the version number of the model shipped inside the package
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "builtin_model"


class SavesItself(Protocol):
    """A model that writes its own .keras file: a keras.Model, or a file already saved."""

    def save(self, filepath: Path, /) -> None:
        """Write the model to `filepath`."""


def write_version_folder(model: SavesItself, card: dict[str, Any], dest: Path) -> Path:
    """Save model and card into a temp folder beside dest, fsync, then rename it into place."""
    if dest.exists():
        raise ModelError(f"model folder {dest} already exists; versions are never overwritten")
    dest.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        model.save(temp / MODEL_FILE)
        (temp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        for name in (MODEL_FILE, CARD_FILE):
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


def load_classifier(folder: Path, *, version: int) -> Classifier:
    """Load a model folder with safe_mode on and check it against its card."""
    import keras

    card = read_card(folder)
    try:
        model = keras.saving.load_model(folder / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a corrupt or hostile file
        raise ModelError(
            f"cannot load {folder / MODEL_FILE}: {type(exc).__name__}: {exc}"
        ) from None
    size = int(card["image_size"])
    classes = tuple(card["classes"])
    expected_out = 1 if len(classes) == 2 else len(classes)
    if tuple(model.input_shape[1:]) != (size, size, 3) or model.output_shape[-1] != expected_out:
        raise ModelError(
            f"{folder}: model shape {model.input_shape}->{model.output_shape} does not match its "
            f"card ({size}x{size}, classes {list(classes)})"
        )
    return Classifier(model=model, classes=classes, image_size=size, version=version)
