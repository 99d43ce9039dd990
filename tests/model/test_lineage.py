"""One model lineage: a version registered on one node loads on another with no shared folder.

Two ModelStores on one real database (a SQLite file, then the PostgreSQL server), each with its
own models folder, stand for two nodes of a fleet; tests/e2e/test_fleet.py has two daemons.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import update

from inboxsort.db import Database, ModelArtifact, open_database
from inboxsort.errors import ModelError
from inboxsort.model.artifact import CARD_FILE, MODEL_FILE
from inboxsort.model.registry import ModelStore

CARD = {"classes": ["cats", "dogs"], "image_size": 8, "metrics": {"test": {"accuracy": 0.75}}}


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database, once on SQLite and once on PostgreSQL."""
    with open_database(db_url) as database:
        yield database


@pytest.fixture(scope="module")
def model() -> Any:
    """A real, tiny Keras model with the served shape contract: (8, 8, 3) -> one logit."""
    import keras

    inputs = keras.Input(shape=(8, 8, 3))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Flatten()(inputs)))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_version_trained_on_one_node_loads_on_another(tmp_path, db: Database, model) -> None:
    here = ModelStore(tmp_path / "a" / "models", db)
    there = ModelStore(tmp_path / "b" / "models", db)
    info = here.register(model, CARD, parent=None, activate=True)
    assert not there.folder(info.version).exists()
    pixels = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype("float32")
    served = there.load(info.version, runtime="keras")
    expected = here.load(info.version, runtime="keras")
    assert served.version == info.version and served.classes == ("cats", "dogs")
    got, want = served.predict(pixels), expected.predict(pixels)
    assert [p.label for p in got] == [p.label for p in want]
    np.testing.assert_allclose([p.score for p in got], [p.score for p in want], atol=1e-6)
    for name in (MODEL_FILE, CARD_FILE):
        mine = (here.folder(info.version) / name).read_bytes()
        assert (there.folder(info.version) / name).read_bytes() == mine
    assert there.serving(info.version, "auto")[0] == "keras"  # no flatbuffer: said, not failed


def test_a_cached_copy_that_differs_is_fetched_again(tmp_path, db: Database, model) -> None:
    here = ModelStore(tmp_path / "a" / "models", db)
    there = ModelStore(tmp_path / "b" / "models", db)
    version = here.register(model, CARD, parent=None, activate=False).version
    good = (there.local(version) / MODEL_FILE).read_bytes()
    (there.folder(version) / MODEL_FILE).write_bytes(b"PK\x03\x04 not a keras archive")
    assert (there.local(version) / MODEL_FILE).read_bytes() == good
    assert sha(good) == sha((here.folder(version) / MODEL_FILE).read_bytes())


def test_a_stored_file_whose_hash_does_not_match_is_refused(tmp_path, db: Database, model) -> None:
    here = ModelStore(tmp_path / "a" / "models", db)
    there = ModelStore(tmp_path / "b" / "models", db)
    version = here.register(model, CARD, parent=None, activate=False).version
    with db.begin() as session:
        session.execute(
            update(ModelArtifact)
            .where(ModelArtifact.version == version, ModelArtifact.name == MODEL_FILE)
            .values(data=b"tampered")
        )
    with pytest.raises(ModelError, match="does not match its SHA-256"):
        there.load(version, runtime="keras")
    assert not there.folder(version).exists()  # nothing half-fetched is left to load
    assert [p.name for p in there.models_dir.iterdir()] == []


def test_activating_a_version_this_node_lacks_fetches_it(tmp_path, db: Database, model) -> None:
    here = ModelStore(tmp_path / "a" / "models", db)
    there = ModelStore(tmp_path / "b" / "models", db)
    version = here.register(model, CARD, parent=None, activate=False).version
    there.activate(version)
    assert here.active_version() == version
    assert (there.folder(version) / MODEL_FILE).is_file()
