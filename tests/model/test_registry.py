"""The model registry: version folders plus rows in a real SQLite database, one active."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inboxsort.db import open_database
from inboxsort.errors import ModelError
from inboxsort.imageio import load_image
from inboxsort.model.artifact import BUILTIN, BUILTIN_DIR, load_classifier, read_card
from inboxsort.model.litert import AGREEMENT_BOUND, LITERT_FILE
from inboxsort.model.registry import ModelStore, VersionInfo

CARD = {"classes": ["cats", "dogs"], "image_size": 8, "metrics": {"test": {"accuracy": 0.75}}}


def small_model() -> Any:
    """A real, tiny Keras model with the served shape contract: (8, 8, 3) -> one logit."""
    import keras

    inputs = keras.Input(shape=(8, 8, 3))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))


@pytest.fixture(scope="module")
def model() -> Any:
    return small_model()


@pytest.fixture
def store(tmp_path, db) -> ModelStore:
    return ModelStore(tmp_path / "models", db)


def active(store: ModelStore) -> list[int]:
    return [v.version for v in store.versions() if v.active]


def test_empty_registry_lists_the_builtin_as_active(store):
    versions = store.versions()
    assert len(versions) == 1
    builtin = versions[0]
    assert isinstance(builtin, VersionInfo)
    assert builtin.version == BUILTIN == 0
    assert builtin.builtin is True
    assert builtin.active is True
    assert builtin.path == str(BUILTIN_DIR)
    assert store.active_version() == BUILTIN
    assert store.folder(BUILTIN) == BUILTIN_DIR


def test_register_twice_gives_versions_1_and_2(store, model, tmp_path):
    first = store.register(model, CARD, parent=None, activate=False, note="first")
    second = store.register(model, CARD, parent=1, activate=False, promoted=True)
    assert (first.version, second.version) == (1, 2)
    assert first.path == str(tmp_path / "models" / "0001")
    assert second.path == str(tmp_path / "models" / "0002")
    assert first.active is False and second.active is False
    assert active(store) == [BUILTIN]
    assert first.image_size == 8 and first.classes == ["cats", "dogs"]
    assert first.metrics == CARD["metrics"]
    assert (first.parent, first.note, first.promoted) == (None, "first", None)
    assert (second.parent, second.promoted) == (1, True)
    assert first.created_at and first.created_at <= second.created_at
    for info in (first, second):
        card = read_card(Path(info.path))
        assert card == {**CARD, "version": info.version, "parent": info.parent}
        assert json.loads(json.dumps(info.to_json())) == info.to_json()
    assert [v.version for v in store.versions()] == [0, 1, 2]


def test_register_with_activate_makes_it_the_only_active_version(store, model):
    store.register(model, CARD, parent=None, activate=True)
    info = store.register(model, CARD, parent=1, activate=True)
    assert info.active is True
    assert active(store) == [2]
    assert store.active_version() == 2
    assert store.versions()[0].builtin and not store.versions()[0].active


def test_activate_switches_and_zero_goes_back_to_the_builtin(store, model):
    store.register(model, CARD, parent=None, activate=True)
    store.register(model, CARD, parent=1, activate=False)
    store.activate(2)
    assert active(store) == [2]
    store.activate(1)
    assert active(store) == [1]
    store.activate(BUILTIN)
    assert active(store) == [BUILTIN]
    assert store.active_version() == BUILTIN


def test_activate_unknown_version_is_refused_and_changes_nothing(store, model):
    store.register(model, CARD, parent=None, activate=True)
    with pytest.raises(ModelError) as info:
        store.activate(42)
    assert str(info.value) == "model version 42 is not registered"
    assert active(store) == [1]


def test_activate_a_version_whose_folder_is_gone_is_refused(store, model):
    store.register(model, CARD, parent=None, activate=True)
    store.register(model, CARD, parent=1, activate=False)
    shutil.rmtree(store.folder(2))
    forget_stored_files(store, 2)  # else its files come back from the database (lineage)
    with pytest.raises(ModelError, match=r"^model version 2: .*0002 is missing$"):
        store.activate(2)
    assert active(store) == [1]


def forget_stored_files(store: ModelStore, version: int) -> None:
    """Delete a version's files from the database, as for a version from before 0004."""
    from sqlalchemy import delete

    from inboxsort.db import ModelArtifact

    with store.db.begin() as session:
        session.execute(delete(ModelArtifact).where(ModelArtifact.version == version))


def test_rollback_walks_parents_then_the_builtin(store, model):
    store.register(model, CARD, parent=None, activate=True)
    store.register(model, CARD, parent=1, activate=True)
    assert store.rollback() == 1
    assert active(store) == [1]
    assert store.rollback() == BUILTIN
    assert active(store) == [BUILTIN]
    with pytest.raises(ModelError) as info:
        store.rollback()
    assert str(info.value) == "the shipped model is active; there is nothing to roll back to"
    assert active(store) == [BUILTIN]


def test_a_stray_folder_on_disk_is_never_reused(store, model):
    stray = store.models_dir / "0001"
    stray.mkdir(parents=True)
    (stray / "leftover.txt").write_text("from a crashed run")
    info = store.register(model, CARD, parent=None, activate=False)
    assert info.version == 2
    assert (stray / "leftover.txt").read_text() == "from a crashed run"


def test_state_survives_reopening_the_database(tmp_path, model):
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    with open_database(url) as db:
        ModelStore(tmp_path / "models", db).register(model, CARD, parent=None, activate=True)
    with open_database(url) as db:
        again = ModelStore(tmp_path / "models", db)
        assert again.active_version() == 1
        assert [v.version for v in again.versions()] == [0, 1]
        assert again.register(model, CARD, parent=1, activate=False).version == 2


def test_load_returns_the_active_or_the_asked_version(store, model):
    store.register(model, CARD, parent=None, activate=False)
    store.register(model, CARD, parent=1, activate=True)
    assert store.load().version == 2
    first = store.load(1)
    assert first.version == 1 and first.classes == ("cats", "dogs") and first.image_size == 8
    with pytest.raises(ModelError, match=r"^model version 9: .*0009 has no model\.keras$"):
        store.load(9)


def test_register_the_tiny_model_and_serve_it(store, tiny_model, dataset_root):
    trained = load_classifier(tiny_model, version=-1, runtime="keras")
    card = read_card(tiny_model)
    litert = (tiny_model / LITERT_FILE).read_bytes()
    info = store.register(
        trained.model, card, parent=None, activate=True, note="tiny", litert=litert
    )
    assert (info.version, info.active, info.image_size) == (1, True, 160)
    assert info.metrics == card["metrics"]
    folder = store.folder(1)
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.keras", LITERT_FILE]
    assert (folder / LITERT_FILE).read_bytes() == litert
    assert read_card(folder)["litert"] == card["litert"]
    assert store.serving(1) == ("litert", None)
    served = store.load()
    assert served.version == 1 and served.classes == ("cats", "dogs")
    assert served.runtime == "litert"
    pixels = np.stack([load_image(dataset_root / "validation" / "dogs" / "dog.2000.jpg", 160)])
    np.testing.assert_allclose(
        served.predict_probabilities(pixels),
        trained.predict_probabilities(pixels),
        atol=AGREEMENT_BOUND,
    )
    assert store.load(runtime="keras").runtime == "keras"


def test_register_without_flatbuffer_drops_the_cards_litert_entry(store, model):
    entry = {"file": LITERT_FILE, "sha256": "0" * 64, "agreement": {}, "agrees": True}
    store.register(model, {**CARD, "litert": entry}, parent=None, activate=True)
    folder = store.folder(1)
    assert "litert" not in read_card(folder)
    assert not (folder / LITERT_FILE).exists()
    runtime, why = store.serving(1)
    assert runtime == "keras" and why is not None and "no LiteRT artifact" in why
    assert store.serving(1, "keras") == ("keras", 'serving.runtime = "keras"')
    shutil.rmtree(folder)
    forget_stored_files(store, 1)
    runtime, why = store.serving(1)
    assert runtime == "none" and why is not None and "unreadable" in why
