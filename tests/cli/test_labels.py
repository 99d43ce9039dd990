"""`inboxsort label` and `reclassify` on real files, a real SQLite file and a real model."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import queue
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from watchdog.observers import Observer

from inboxsort.cli import main
from inboxsort.cli.labels import parse_since
from inboxsort.config import Config, load_config
from inboxsort.db import (
    SOURCE_LABEL,
    SOURCE_MOVE,
    SOURCE_RECLASSIFY,
    Correction,
    Database,
    Image,
    ModelVersion,
    open_database,
    utcnow,
)
from inboxsort.errors import ConfigError, InboxsortError
from inboxsort.library.relabel import relabel
from inboxsort.library.watcher import LibraryHandler, LibraryTracker, LibraryWorker
from tests.helpers.filedrows import CLASSES, corrections, file_image, get_image, serving, write_file


@dataclass(frozen=True)
class Site:
    config_path: Path
    config: Config
    db: Database

    @property
    def library(self) -> Path:
        return self.config.paths.library


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() installs its own root handler (bound to this test's stderr): undo that after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


@pytest.fixture
def site(make_config, db_url) -> Iterator[Site]:
    """A config under tmp_path with the shipped model active (classes cats, dogs), its
    database on SQLite and on PostgreSQL."""
    config_path = make_config(database_url=db_url)
    config = load_config(config_path)
    for name in CLASSES:
        (config.paths.library / name).mkdir(parents=True)
    db = open_database(config.database.url)
    yield Site(config_path, config, db)
    db.close()


# ---- label ------------------------------------------------------------------------------


def test_label_through_the_command_line(site, run_cli):
    image = file_image(site.db, site.library / "cats" / "a.jpg", "cats", score=0.8)
    result = run_cli("--config", site.config_path, "label", site.library / "cats" / "a.jpg", "dogs")
    assert result.returncode == 0, result.stderr
    dest = site.library / "dogs" / "a.jpg"
    assert result.stdout == (
        f"labelled {site.library / 'cats' / 'a.jpg'} as dogs (was cats): moved to {dest}\n"
    )
    assert dest.is_file() and not (site.library / "cats" / "a.jpg").exists()
    [c] = corrections(site.db)
    assert (c.image_id, c.old_label, c.new_label, c.source) == (image, "cats", "dogs", "label")
    assert (c.old_path, c.new_path) == (str(site.library / "cats" / "a.jpg"), str(dest))
    row = get_image(site.db, image)
    assert (row.label, row.path) == ("dogs", str(dest))
    # score is the probability of dogs now; what the model said (cats, 0.8) is kept beside it.
    assert row.score == pytest.approx(0.2)
    assert (row.model_label, row.model_score) == ("cats", 0.8)


def test_label_by_direct_call_with_a_relative_path_and_a_taken_name(site, capsys, monkeypatch):
    image = file_image(site.db, site.library / "cats" / "a.jpg", "cats")
    other = write_file(site.library / "dogs" / "a.jpg", b"somebody else's picture")
    monkeypatch.chdir(site.library)
    code = main(["--config", str(site.config_path), "label", "cats/a.jpg", "dogs"])
    assert code == 0, capsys.readouterr().err
    dest = site.library / "dogs" / "a (1).jpg"  # never over another file
    assert other.read_bytes() == b"somebody else's picture"
    assert get_image(site.db, image).path == str(dest) and dest.is_file()
    assert [c.new_path for c in corrections(site.db)] == [str(dest)]
    # Labelling it again with the same class changes nothing and records nothing.
    assert main(["--config", str(site.config_path), "label", str(dest), "dogs"]) == 0
    assert "already labelled dogs" in capsys.readouterr().out
    assert len(corrections(site.db)) == 1


def test_label_an_unknown_class_is_a_usage_error_naming_the_classes(site, run_cli):
    image = file_image(site.db, site.library / "cats" / "a.jpg", "cats")
    result = run_cli("--config", site.config_path, "label", site.library / "cats" / "a.jpg", "cow")
    assert result.returncode == 2
    assert result.stderr == "inboxsort: unknown class 'cow': expected one of cats, dogs\n"
    assert get_image(site.db, image).path == str(site.library / "cats" / "a.jpg")
    assert corrections(site.db) == []


def test_label_a_path_not_in_the_database_fails_clearly(site, capsys, tmp_path):
    stray = write_file(site.library / "cats" / "stray.jpg")
    assert main(["--config", str(site.config_path), "label", str(stray), "dogs"]) == 1
    err = capsys.readouterr().err
    assert f"{stray} is not a filed image in the database" in err
    missing = tmp_path / "nowhere.jpg"
    assert main(["--config", str(site.config_path), "label", str(missing), "dogs"]) == 1
    assert capsys.readouterr().err == f"inboxsort: {missing}: no such file\n"
    assert stray.is_file() and corrections(site.db) == []


def test_a_failed_move_reverts_the_row_and_leaves_no_correction(site):
    image = file_image(site.db, site.library / "cats" / "a.jpg", "cats", score=0.7)
    shutil.rmtree(site.library / "dogs")
    write_file(site.library / "dogs", b"a file where the class folder belongs")
    with pytest.raises(InboxsortError, match="cannot move"):
        relabel(
            site.db,
            image_path=site.library / "cats" / "a.jpg",
            new_label="dogs",
            source=SOURCE_LABEL,
            library=site.library,
            classes=CLASSES,
        )
    row = get_image(site.db, image)
    assert (row.label, row.path, row.score) == ("cats", str(site.library / "cats" / "a.jpg"), 0.7)
    assert (row.model_label, row.model_score) == ("cats", 0.7)
    assert (site.library / "cats" / "a.jpg").is_file()
    assert corrections(site.db) == []
    with pytest.raises(ConfigError, match="expected one of cats, dogs"):
        relabel(
            site.db,
            image_path=site.library / "cats" / "a.jpg",
            new_label="cow",
            source=SOURCE_LABEL,
            library=site.library,
            classes=CLASSES,
        )


def test_label_while_a_daemon_watches_the_library_is_one_correction(site, run_cli):
    image = file_image(site.db, site.library / "cats" / "a.jpg", "cats")
    events: queue.SimpleQueue = queue.SimpleQueue()
    tracker = LibraryTracker(site.db, library=site.library, model=serving())
    observer = Observer()
    observer.schedule(LibraryHandler(events), str(site.library), recursive=True)
    worker = LibraryWorker(tracker, events, tick=0.1)
    observer.start()
    worker.start()
    try:
        result = run_cli(
            "--config", site.config_path, "label", site.library / "cats" / "a.jpg", "dogs"
        )
        assert result.returncode == 0, result.stderr
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not events.empty():
            time.sleep(0.05)
        time.sleep(0.5)  # the worker has handled the move events by now
    finally:
        observer.stop()
        observer.join(timeout=10)
        assert worker.stop(timeout=10)
    assert [(c.image_id, c.source) for c in corrections(site.db)] == [(image, SOURCE_LABEL)]
    assert get_image(site.db, image).path == str(site.library / "dogs" / "a.jpg")


def test_parse_since():
    now = dt.datetime(2024, 5, 10, 12, 0, tzinfo=dt.UTC)
    assert parse_since("2h", now=now) == now - dt.timedelta(hours=2)
    assert parse_since("7d", now=now) == now - dt.timedelta(days=7)
    assert parse_since("2024-05-01T08:00+02:00") == dt.datetime(2024, 5, 1, 6, 0, tzinfo=dt.UTC)
    assert parse_since("2024-05-01").tzinfo is dt.UTC
    assert parse_since("1.5h", now=now) == now - dt.timedelta(minutes=90)
    with pytest.raises(argparse.ArgumentTypeError, match="expected an ISO date"):
        parse_since("yesterday")


# ---- reclassify -------------------------------------------------------------------------

PER_CLASS = 4


@pytest.fixture(scope="module")
def predicted(tiny_model, dataset_root) -> dict[Path, tuple[str, float]]:
    """What tiny_model says about a few validation images: path → (label, score)."""
    import numpy as np

    from inboxsort.imageio import load_image
    from inboxsort.model.artifact import load_classifier

    classifier = load_classifier(tiny_model, version=1)
    paths = [
        p
        for name in CLASSES
        for p in sorted((dataset_root / "validation" / name).glob("*.jpg"))[:PER_CLASS]
    ]
    pixels = np.stack([load_image(p, classifier.image_size) for p in paths])
    preds = classifier.predict(pixels)
    return {p: (pred.label, pred.score) for p, pred in zip(paths, preds, strict=True)}


def activate(site: Site, model_folder: Path) -> None:
    """Register a model folder as version 1, active, as ModelStore.register records it."""
    folder = site.config.paths.models / "0001"
    shutil.copytree(model_folder, folder)
    card = json.loads((folder / "card.json").read_text())
    with site.db.begin() as session:
        session.add(
            ModelVersion(
                version=1,
                created_at=utcnow(),
                path=str(folder),
                metrics={},
                active=True,
                image_size=card["image_size"],
                classes=card["classes"],
            )
        )


def test_reclassify_reports_then_applies_and_never_overrules_the_user(
    site, tiny_model, predicted, run_cli, capsys
):
    activate(site, tiny_model)
    # Skip images the model is unsure of: two decoders in two processes may differ a hair.
    sure = [(p, label) for p, (label, score) in predicted.items() if score >= 0.6]
    assert len(sure) >= 4, f"tiny_model is unsure of too many images: {predicted}"
    other = {"cats": "dogs", "dogs": "cats"}
    (agree, agree_label), (wrong, wrong_label), (old, old_label), (user, user_label) = sure[:4]
    ids = {}
    for key, path, label in (
        ("agree", agree, agree_label),
        ("wrong", wrong, other[wrong_label]),  # an older model got these two wrong
        ("old", old, other[old_label]),
        ("user", user, other[user_label]),  # ... and the user confirmed this one by hand
    ):
        ids[key] = file_image(
            site.db, site.library / label / path.name, label, source=path, score=0.55
        )
    with site.db.begin() as session:
        session.add(
            Correction(
                image_id=ids["user"],
                old_label=user_label,
                new_label=other[user_label],
                source=SOURCE_MOVE,
            )
        )
        row = session.get(Image, ids["old"])
        row.filed_at = utcnow() - dt.timedelta(days=3)

    dry = run_cli("--config", site.config_path, "reclassify", "--json")
    assert dry.returncode == 0, dry.stderr[-3000:]
    out = json.loads(dry.stdout)
    assert (out["model_version"], out["applied"], out["checked"]) == (1, False, 3)
    changes = {c["id"]: c for c in out["changes"]}
    assert sorted(changes) == sorted([ids["wrong"], ids["old"]])
    assert changes[ids["wrong"]]["old_label"] == other[wrong_label]
    assert changes[ids["wrong"]]["new_label"] == wrong_label
    assert changes[ids["wrong"]]["score"] == pytest.approx(predicted[wrong][1], abs=2e-3)
    assert corrections(site.db)[0].source == SOURCE_MOVE and len(corrections(site.db)) == 1
    assert (site.library / other[wrong_label] / wrong.name).is_file()  # a dry run moves nothing

    code = main(["--config", str(site.config_path), "reclassify", "--apply", "--since", "1d"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    dest = site.library / wrong_label / wrong.name
    assert f"→ {wrong_label}" in text and f"moved to {dest}" in text
    assert text.splitlines()[-1] == "model version 1: moved 1 of 2 filed images"
    assert dest.is_file()
    row = get_image(site.db, ids["wrong"])
    assert (row.label, row.path, row.model_version) == (wrong_label, str(dest), 1)
    assert row.score == pytest.approx(predicted[wrong][1], abs=2e-3)
    # A model said it: the new model's label and score replace the old model's.
    assert (row.model_label, row.model_score) == (wrong_label, row.score)
    made = [c for c in corrections(site.db) if c.source == SOURCE_RECLASSIFY]
    assert [(c.image_id, c.old_label, c.new_label) for c in made] == [
        (ids["wrong"], other[wrong_label], wrong_label)
    ]
    # Filed before --since: untouched; the user's image: untouched.
    assert get_image(site.db, ids["old"]).label == other[old_label]
    assert get_image(site.db, ids["user"]).path == str(site.library / other[user_label] / user.name)
