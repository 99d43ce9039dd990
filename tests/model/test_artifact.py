"""Model folders on disk: atomic writes, no overwrites, safe loading checked against the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inboxsort.errors import ModelError
from inboxsort.imageio import load_image
from inboxsort.model.artifact import (
    CARD_FILE,
    MODEL_FILE,
    load_classifier,
    read_card,
    write_version_folder,
)
from inboxsort.model.classifier import Classifier

SMALL_CARD = {"classes": ["cats", "dogs"], "image_size": 8, "metrics": {"test": {"accuracy": 0.5}}}


def small_model(*, lambda_layer: bool = False) -> Any:
    """A real, tiny Keras model shaped like a served one: (8, 8, 3) pixels -> one logit."""
    import keras

    inputs = keras.Input(shape=(8, 8, 3), name="pixels")
    x = inputs
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t / 255.0, name="scale")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(1, name="logit")(x)
    return keras.Model(inputs, outputs)


class Saver:
    """Stands in for a model: its save() runs `action(path)` (write, record, or raise)."""

    def __init__(self, action: Any) -> None:
        self.action = action

    def save(self, path: Path) -> None:
        self.action(path)


def leftovers(parent: Path, dest: Path) -> list[str]:
    """Entries of parent other than dest: temp folders a write left behind."""
    return sorted(p.name for p in parent.iterdir() if p != dest)


# ---------------------------------------------------------------------------------------------
# write_version_folder
# ---------------------------------------------------------------------------------------------


def test_write_creates_a_complete_folder_and_no_temp_folder(tmp_path):
    dest = tmp_path / "models" / "0001"
    assert write_version_folder(small_model(), SMALL_CARD, dest) == dest
    assert sorted(p.name for p in dest.iterdir()) == [CARD_FILE, MODEL_FILE]
    assert json.loads((dest / CARD_FILE).read_text()) == SMALL_CARD
    assert (dest / MODEL_FILE).stat().st_size > 0
    assert leftovers(dest.parent, dest) == []
    classifier = load_classifier(dest, version=1)
    assert classifier.classes == ("cats", "dogs")


def test_dest_does_not_exist_until_the_folder_is_complete(tmp_path):
    dest = tmp_path / "models" / "0007"
    model = small_model()
    seen: dict[str, Any] = {}

    def save_and_look(path: Path) -> None:
        seen["dest_existed"] = dest.exists()
        seen["temp"] = path.parent
        model.save(path)

    write_version_folder(Saver(save_and_look), SMALL_CARD, dest)
    assert seen["dest_existed"] is False
    temp = seen["temp"]
    assert temp.parent == dest.parent  # same filesystem, so the final rename is atomic
    assert temp.name.startswith(".0007.") and temp.name.endswith(".tmp")
    assert not temp.exists()
    assert leftovers(dest.parent, dest) == []
    assert load_classifier(dest, version=7).version == 7


def test_an_existing_dest_is_never_overwritten(tmp_path):
    dest = tmp_path / "0001"
    dest.mkdir()
    (dest / "keep.txt").write_text("precious")
    with pytest.raises(ModelError) as info:
        write_version_folder(small_model(), SMALL_CARD, dest)
    assert str(info.value) == (
        f"model folder {dest} already exists; versions are never overwritten"
    )
    assert sorted(p.name for p in dest.iterdir()) == ["keep.txt"]
    assert (dest / "keep.txt").read_text() == "precious"
    assert leftovers(tmp_path, dest) == []


def test_a_failing_save_leaves_neither_dest_nor_temp(tmp_path):
    dest = tmp_path / "models" / "0002"

    def fail(path: Path) -> None:
        path.write_bytes(b"half a model")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_version_folder(Saver(fail), SMALL_CARD, dest)
    assert not dest.exists()
    assert leftovers(dest.parent, dest) == []


def test_an_unwritable_card_leaves_neither_dest_nor_temp(tmp_path):
    dest = tmp_path / "0003"
    with pytest.raises(TypeError):
        write_version_folder(small_model(), {**SMALL_CARD, "bad": object()}, dest)
    assert not dest.exists()
    assert leftovers(tmp_path, dest) == []


def test_an_interrupt_during_save_also_cleans_up(tmp_path):
    dest = tmp_path / "0004"

    def interrupt(path: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_version_folder(Saver(interrupt), SMALL_CARD, dest)
    assert leftovers(tmp_path, dest) == []


# ---------------------------------------------------------------------------------------------
# load_classifier / read_card
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_copy(tiny_model, tmp_path) -> Path:
    """A private copy of the session's tiny model folder, free to damage."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


def edit_card(folder: Path, **changes: Any) -> None:
    card = json.loads((folder / CARD_FILE).read_text())
    card.update(changes)
    (folder / CARD_FILE).write_text(json.dumps(card))


def test_tiny_model_loads_with_safe_mode_and_classifies(tiny_model, tiny_card, dataset_root):
    # Its Keras file (LiteRT serving is tests/model/test_litert.py).
    classifier = load_classifier(tiny_model, version=3, runtime="keras")
    assert isinstance(classifier, Classifier)
    assert classifier.classes == ("cats", "dogs") == tuple(tiny_card["classes"])
    assert classifier.image_size == 160 == tiny_card["image_size"]
    assert classifier.version == 3
    assert tuple(classifier.model.input_shape) == (None, 160, 160, 3)
    files = [
        dataset_root / "validation" / c / f"{c[:-1]}.{n}.jpg"
        for c, n in [("cats", 2000), ("dogs", 2000), ("cats", 2001)]
    ]
    pixels = np.stack([load_image(p, 160) for p in files])
    probs = classifier.predict_probabilities(pixels)
    assert probs.shape == (3, 2)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert ((probs >= 0) & (probs <= 1)).all()
    predictions = classifier.predict(pixels)
    for prediction, row in zip(predictions, probs, strict=True):
        assert prediction.label in classifier.classes
        assert prediction.score == pytest.approx(row.max())
        assert 0.5 <= prediction.score <= 1.0


def test_card_image_size_mismatch_is_refused(tiny_copy):
    edit_card(tiny_copy, image_size=224)
    with pytest.raises(ModelError) as info:
        load_classifier(tiny_copy, version=1)
    assert "does not match its card (224x224, classes ['cats', 'dogs'])" in str(info.value)


def test_card_class_count_mismatch_is_refused(tiny_copy):
    edit_card(tiny_copy, classes=["cats", "dogs", "birds"])
    with pytest.raises(ModelError, match=r"does not match its card \(160x160, classes"):
        load_classifier(tiny_copy, version=1)


def test_garbage_model_file_is_a_model_error(tiny_copy):
    (tiny_copy / MODEL_FILE).write_bytes(b"\x00garbage, not a zip" * 100)
    with pytest.raises(ModelError) as info:
        load_classifier(tiny_copy, version=1, runtime="keras")
    assert str(info.value).startswith(f"cannot load {tiny_copy / MODEL_FILE}: ")


def test_truncated_model_file_is_a_model_error(tmp_path):
    folder = write_version_folder(small_model(), SMALL_CARD, tmp_path / "m")
    data = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"^cannot load .*model\.keras: "):
        load_classifier(folder, version=1)


def test_missing_model_file_is_a_model_error(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / CARD_FILE).write_text(json.dumps(SMALL_CARD))
    with pytest.raises(ModelError, match=r"^cannot load "):
        load_classifier(folder, version=1)


def test_lambda_layer_is_refused_by_safe_mode(tmp_path):
    folder = write_version_folder(small_model(lambda_layer=True), SMALL_CARD, tmp_path / "evil")
    with pytest.raises(ModelError) as info:
        load_classifier(folder, version=1)
    message = str(info.value)
    assert message.startswith(f"cannot load {folder / MODEL_FILE}: ")
    assert "Lambda" in message and "safe_mode" in message


def test_card_without_required_keys(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / CARD_FILE).write_text(json.dumps({"image_size": 8}))
    with pytest.raises(ModelError) as info:
        read_card(folder)
    assert str(info.value) == f"model card {folder / CARD_FILE} lacks 'classes'"


@pytest.mark.parametrize("content", [None, "{not json", ""])
def test_unreadable_card(tmp_path, content):
    folder = tmp_path / "m"
    folder.mkdir()
    if content is not None:
        (folder / CARD_FILE).write_text(content)
    with pytest.raises(ModelError, match=rf"^model card {folder / CARD_FILE} is unreadable: "):
        load_classifier(folder, version=1)
