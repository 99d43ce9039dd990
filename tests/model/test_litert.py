"""LiteRT serving on the real tiny model: its flatbuffer, the agreement gate, and every fallback.

The session's tiny_model got its flatbuffer the way `inboxsort train` makes one (train() converts
the served model and checks it on the test split), so these tests read what users get.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inboxsort.errors import ModelError
from inboxsort.files import file_sha256
from inboxsort.imageio import load_many
from inboxsort.model.artifact import CARD_FILE, MODEL_FILE, load_classifier, read_card
from inboxsort.model.litert import AGREEMENT_BOUND, LITERT_FILE, LiteRTNetwork, refusal
from inboxsort.trainer.dataset import discover

ARTIFACT_LOGGER = "inboxsort.model.artifact"
REAL_IMAGES = 24  # validation images (the tiny model never saw them) for both runtimes


@pytest.fixture
def tiny_copy(tiny_model: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny model folder, free to damage."""
    return Path(shutil.copytree(tiny_model, tmp_path / "model"))


@pytest.fixture(scope="module")
def real_pixels(dataset_root: Path) -> np.ndarray:
    """REAL_IMAGES validation images of both classes, decoded at 160 px."""
    per_class = REAL_IMAGES // 2
    paths = [
        path
        for name in ("cats", "dogs")
        for path in sorted((dataset_root / "validation" / name).glob("*.jpg"))[:per_class]
    ]
    loaded = load_many(paths, 160)
    assert len(loaded.pixels) == REAL_IMAGES
    return loaded.pixels


def edit_card(folder: Path, **changes: Any) -> None:
    card = json.loads((folder / CARD_FILE).read_text())
    card.update(changes)
    (folder / CARD_FILE).write_text(json.dumps(card))


def fallback_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == ARTIFACT_LOGGER and "serves with Keras" in r.getMessage()
    ]


# ---------------------------------------------------------------------------------------------
# The artifact `inboxsort train` made
# ---------------------------------------------------------------------------------------------


def test_the_tiny_flatbuffer_agrees_with_keras_on_its_test_split(tiny_model, tiny_card, tiny_data):
    entry = tiny_card["litert"]
    assert entry["file"] == LITERT_FILE
    assert entry["sha256"] == file_sha256(tiny_model / LITERT_FILE)
    gate = entry["agreement"]
    test_n = len(discover(tiny_data).test)
    assert test_n > 0 and gate["n"] == test_n == tiny_card["data"]["test"]
    assert gate["probe"] == f"the {test_n} test images"
    assert gate["labels_equal"] == gate["n"]
    assert 0.0 <= gate["max_abs_diff"] <= gate["bound"] == AGREEMENT_BOUND
    assert entry["agrees"] is True
    assert refusal(tiny_model, read_card(tiny_model), "auto") is None  # it may serve LiteRT
    # Measured again here, outside the code that wrote the card.
    test_pixels = load_many([s.path for s in discover(tiny_data).test], 160).pixels
    ours = load_classifier(tiny_model, version=1).predict_all(test_pixels)
    theirs = load_classifier(tiny_model, version=1, runtime="keras").predict_all(test_pixels)
    assert (ours.argmax(axis=1) == theirs.argmax(axis=1)).all()
    assert np.abs(ours - theirs).max() <= AGREEMENT_BOUND


def test_the_tiny_model_serves_litert_by_default_and_keras_when_asked(tiny_model, caplog):
    caplog.set_level(logging.INFO, logger="inboxsort")
    for runtime in ("auto", "litert"):
        served = load_classifier(tiny_model, version=1, runtime=runtime, workers=2)
        assert served.runtime == "litert" and isinstance(served.model, LiteRTNetwork)
        assert (served.classes, served.image_size) == (("cats", "dogs"), 160)
    keras_served = load_classifier(tiny_model, version=1, runtime="keras")
    assert keras_served.runtime == "keras"
    assert tuple(keras_served.model.input_shape) == (None, 160, 160, 3)
    assert fallback_records(caplog) == []  # asking for Keras is not a fallback worth a line


def test_litert_and_keras_give_the_same_labels_on_real_images(tiny_model, real_pixels):
    litert = load_classifier(tiny_model, version=1)
    keras_model = load_classifier(tiny_model, version=1, runtime="keras")
    assert litert.runtime == "litert" and keras_model.runtime == "keras"
    ours, theirs = litert.predict_all(real_pixels), keras_model.predict_all(real_pixels)
    assert [p.label for p in litert.to_predictions(ours)] == [
        p.label for p in keras_model.to_predictions(theirs)
    ]
    assert np.abs(ours - theirs).max() <= AGREEMENT_BOUND
    # Batches of any size, one at a time and all at once, give the same answers.
    np.testing.assert_allclose(litert.predict_all(real_pixels, batch=1), ours, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Falling back to Keras
# ---------------------------------------------------------------------------------------------


def test_a_corrupted_flatbuffer_falls_back_to_keras_with_the_sha_reason(tiny_copy, caplog):
    caplog.set_level(logging.INFO, logger="inboxsort")
    data = bytearray((tiny_copy / LITERT_FILE).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    (tiny_copy / LITERT_FILE).write_bytes(bytes(data))  # the card is unchanged
    served = load_classifier(tiny_copy, version=4)
    assert served.runtime == "keras" and served.version == 4
    [record] = fallback_records(caplog)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f"model version 4 serves with Keras: {tiny_copy / LITERT_FILE} does not match the "
        "SHA-256 its card records"
    )
    assert refusal(tiny_copy, read_card(tiny_copy), "auto") == (
        f"{tiny_copy / LITERT_FILE} does not match the SHA-256 its card records"
    )


def test_a_card_whose_gate_failed_falls_back_to_keras(tiny_copy, tiny_card, caplog):
    caplog.set_level(logging.INFO, logger="inboxsort")
    entry = tiny_card["litert"]
    gate = {**entry["agreement"], "labels_equal": entry["agreement"]["n"] - 1}
    edit_card(tiny_copy, litert={**entry, "agreement": gate, "agrees": False})
    served = load_classifier(tiny_copy, version=1, runtime="litert")
    assert served.runtime == "keras"
    [record] = fallback_records(caplog)
    assert record.levelno == logging.WARNING
    assert "its agreement gate failed" in record.getMessage()
    assert f"{gate['labels_equal']}/{gate['n']} labels equal to Keras" in record.getMessage()


def test_a_missing_flatbuffer_falls_back_to_keras(tiny_copy, caplog):
    caplog.set_level(logging.INFO, logger="inboxsort")
    (tiny_copy / LITERT_FILE).unlink()
    served = load_classifier(tiny_copy, version=1)
    assert served.runtime == "keras"
    [record] = fallback_records(caplog)
    assert record.levelno == logging.WARNING  # the card promised one
    assert f"{tiny_copy / LITERT_FILE} cannot be read" in record.getMessage()


def test_asking_for_litert_of_a_version_without_one_warns(tiny_copy, caplog):
    caplog.set_level(logging.INFO, logger="inboxsort")
    (tiny_copy / LITERT_FILE).unlink()
    card = json.loads((tiny_copy / CARD_FILE).read_text())
    del card["litert"]
    (tiny_copy / CARD_FILE).write_text(json.dumps(card))
    # "auto": an older version without an artifact is normal, an INFO line.
    assert load_classifier(tiny_copy, version=1).runtime == "keras"
    # "litert": the user asked for what this version cannot give, a WARNING.
    assert load_classifier(tiny_copy, version=1, runtime="litert").runtime == "keras"
    records = fallback_records(caplog)
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert all("it has no LiteRT artifact" in r.getMessage() for r in records)
    assert "inboxsort models export" in records[-1].getMessage()


def test_litert_serves_without_reading_model_keras(tiny_copy):
    # The serving process never loads the Keras file when the flatbuffer may serve...
    (tiny_copy / MODEL_FILE).write_bytes(b"PK\x03\x04 not a keras archive")
    assert load_classifier(tiny_copy, version=1).runtime == "litert"
    # ...and the card still guards the flatbuffer's shape.
    edit_card(tiny_copy, classes=["birds", "cats", "dogs"])
    with pytest.raises(ModelError, match=r"does not match its card \(160x160, classes"):
        load_classifier(tiny_copy, version=1)
